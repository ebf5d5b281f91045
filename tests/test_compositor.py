"""The compositor: pixels of the news frame, the face-centred crop, and real ffmpeg encodes."""

from __future__ import annotations

import os
import struct
import subprocess
import wave
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from talkinghead.compositor import (
    EncodeError,
    NewsFrameRenderer,
    NewsLayout,
    NewsScene,
    OutputPathError,
    VideoEncoder,
    probe,
)
from talkinghead.compositor.probe import ProbeError, is_faststart
from talkinghead.compositor.text_fit import fit_line, fit_paragraph, text_width
from tests import unprivileged

FPS = 25
LAYOUT = NewsLayout()
GREEN = (0, 220, 0)
BLUE = (0, 0, 230)
MARKER = (255, 0, 255)


def sample_scene(**changes) -> NewsScene:
    card = dict(
        title="Senior Backend Engineer",
        company="Northwind Logistics",
        location="Berlin, Germany (hybrid)",
        skills=["Python", "PostgreSQL", "Kubernetes", "gRPC", "Celery", "Redis"],
    )
    card.update(changes)
    return NewsScene(**card)


def two_tone_head(height: int = 512, width: int = 512) -> np.ndarray:
    """Left half green, right half blue: shows where the head went and that it is not flipped."""
    head = np.zeros((height, width, 3), np.uint8)
    head[:, : width // 2] = GREEN
    head[:, width // 2 :] = BLUE
    return head


def write_sine_wav(path: Path, seconds: float, rate: int = 44100, freq: float = 440.0) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.5 * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())
    return path


def decode_audio(path: Path, rate: int = 48000) -> np.ndarray:
    """The file's audio track as mono float samples, decoded by ffmpeg."""
    result = subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:a:0",
            "-ac",
            "1",
            "-ar",
            str(rate),
            "-f",
            "s16le",
            "-",
        ],
        capture_output=True,
        check=True,
    )
    return np.frombuffer(result.stdout, "<i2").astype(np.float32) / 32768


def count_video_frames(path: Path) -> int:
    """Decode the whole video stream and count its frames."""
    result = subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:v:0",
            "-f",
            "framemd5",
            "-",
        ],
        capture_output=True,
        check=True,
        text=True,
    )
    return sum(1 for line in result.stdout.splitlines() if line and not line.startswith("#"))


def encode(out: Path, seconds: float, audio: Path | None, size=(1920, 1080)) -> Path:
    renderer = NewsFrameRenderer(sample_scene(), LAYOUT, FPS) if size == LAYOUT.size else None
    head = two_tone_head()
    with VideoEncoder(out, FPS, size=size, audio_path=audio) as video:
        for index in range(round(seconds * FPS)):
            if renderer is not None:
                video.write(renderer.render(head, index))
            else:
                video.write(np.full((size[1], size[0], 3), index % 255, np.uint8))
    return out


def region(frame: np.ndarray, rect) -> np.ndarray:
    x0, y0, x1, y1 = rect
    return frame[y0:y1, x0:x1]


@pytest.fixture(scope="module")
def renderer() -> NewsFrameRenderer:
    return NewsFrameRenderer(sample_scene(), LAYOUT, FPS)


@pytest.fixture(scope="module")
def frame(renderer) -> np.ndarray:
    return renderer.render(two_tone_head(), 0)


# -- the rendered frame ---------------------------------------------------------------------


def test_frame_is_full_hd_rgb(frame):
    assert frame.shape == (1080, 1920, 3) and frame.dtype == np.uint8


def test_top_bar_is_red(frame):
    bar = region(frame, LAYOUT.accent_bar).reshape(-1, 3)
    assert (bar == LAYOUT.accent).all()
    assert LAYOUT.accent[0] > 200 and LAYOUT.accent[1] < 60 and LAYOUT.accent[2] < 80


def test_background_is_dark(frame):
    # Gaps between the panels: left margin, between head and card, right of the card.
    for x0, x1 in ((0, 50), (970, 1015), (1870, 1920)):
        patch = frame[300:900, x0:x1].astype(int)
        assert patch.mean() < 35
        assert patch[..., 2].mean() >= patch[..., 0].mean()  # a cool, blue-black tone


def test_head_panel_shows_head_content(frame):
    x0, y0, x1, y1 = LAYOUT.head_inner
    middle_y = (y0 + y1) // 2
    assert tuple(frame[middle_y, x0 + 100]) == GREEN
    assert tuple(frame[middle_y, x1 - 100]) == BLUE
    panel = region(frame, LAYOUT.head_inner).reshape(-1, 3)
    is_head = (panel == GREEN).all(axis=1) | (panel == BLUE).all(axis=1)
    assert is_head.mean() > 0.99  # the cover fit leaves no background showing
    assert tuple(frame[LAYOUT.head_panel[1], (x0 + x1) // 2]) == LAYOUT.head_border


def test_logo_trapezoid_is_red_with_white_name(frame):
    logo = region(frame, LAYOUT.logo).reshape(-1, 3).astype(int)
    red = (logo[:, 0] > 180) & (logo[:, 1] < 80)
    white = logo.min(axis=1) > 220
    assert red.mean() > 0.5 and white.sum() > 300


def test_card_has_bright_text(frame):
    card = region(frame, LAYOUT.card).astype(int)
    bright = card.min(axis=2) > 200
    assert bright.sum() > 5000
    # The title is the biggest text: most bright pixels are in the card's upper half.
    upper, lower = np.array_split(bright, 2, axis=0)
    assert upper.sum() > lower.sum()


def test_ticker_scrolls_left_and_differs_between_frames(renderer):
    head = two_tone_head()
    crawl = LAYOUT.ticker_crawl
    first = region(renderer.render(head, 0), crawl)
    later = region(renderer.render(head, 10), crawl)
    assert not np.array_equal(first, later)
    moved = renderer.ticker_offset(10) - renderer.ticker_offset(0)
    assert moved == int(10 * LAYOUT.ticker_speed_px_per_s / FPS)
    # Right-to-left: what was `moved` pixels right of the edge is now at the edge.
    assert np.array_equal(later[:, :-moved], first[:, moved:])
    assert (first.min(axis=2) > 200).sum() > 500  # white ticker text is present


def test_ticker_loops_seamlessly(renderer):
    ticker = renderer.ticker
    period = ticker.period_px
    assert period > 500
    # Across the wrap, consecutive offsets still differ by exactly a one-pixel shift.
    for offset in (period - 2, period - 1, period):
        assert np.array_equal(ticker.window(offset)[:, 1:], ticker.window(offset + 1)[:, :-1])
    assert np.array_equal(ticker.window(0), ticker.window(period))
    # Two frames whose crawl distance differs by whole periods show the same ticker.
    seen: dict[int, int] = {}
    for index in range(20 * FPS * period // int(LAYOUT.ticker_speed_px_per_s)):
        offset = renderer.ticker_offset(index)
        if offset in seen:
            break
        seen[offset] = index
    else:
        pytest.fail("no two frames share a ticker offset")
    head = two_tone_head()
    a = region(renderer.render(head, seen[offset]), LAYOUT.ticker_crawl)
    b = region(renderer.render(head, index), LAYOUT.ticker_crawl)
    assert index != seen[offset] and np.array_equal(a, b)


def test_static_layers_leave_ticker_and_head_to_render(renderer, frame):
    static = renderer.static_frame
    assert not static.flags.writeable
    outside = np.ones(frame.shape[:2], bool)
    for rect in (LAYOUT.head_inner, LAYOUT.ticker_crawl):
        x0, y0, x1, y1 = rect
        outside[y0:y1, x0:x1] = False
    assert np.array_equal(frame[outside], static[outside])


def test_long_card_text_stays_inside_the_card():
    huge = sample_scene(
        title="Principal Distributed Systems Reliability Engineer " * 6,
        company="Northwind Logistics International Holdings " * 4,
        location="Berlin, Germany, two days a week near Alexanderplatz " * 4,
        skills=["Observability with OpenTelemetry and Prometheus " * 3, "Rust", "Go"] * 15,
    )
    big = NewsFrameRenderer(huge, LAYOUT, FPS).static_frame
    small = NewsFrameRenderer(sample_scene(title="X", skills=[]), LAYOUT, FPS).static_frame
    changed = (big != small).any(axis=2)
    x0, y0, x1, y1 = LAYOUT.card
    changed[y0:y1, x0:x1] = False
    assert not changed.any()


def test_text_fitting_never_exceeds_the_box():
    title = fit_paragraph("Supercalifragilistic " * 20, 500, 3, 60, 30, bold=True)
    assert len(title.lines) == 3 and title.size == 30 and title.lines[-1].endswith("…")
    assert all(text_width(line, title.font) <= 500 for line in title.lines)
    line = fit_line("A" * 200, 300, 40, 20)
    assert line.lines[0].endswith("…") and text_width(line.lines[0], line.font) <= 300
    assert fit_line("Short", 300, 40, 20).size == 40


def test_default_ticker_text_comes_from_the_card():
    text = sample_scene().resolved_ticker_text()
    assert text.startswith("NOW HIRING · Senior Backend Engineer at Northwind Logistics · ")
    assert "Skills: Python, PostgreSQL, Kubernetes, gRPC, Celery, Redis" in text
    assert text.endswith(" · ")  # so the loop joins with a separator
    assert sample_scene(ticker_text="Custom").resolved_ticker_text() == "Custom · "


def test_logo_image_replaces_channel_name(tmp_path):
    from PIL import Image

    logo = tmp_path / "logo.png"
    Image.new("RGBA", (200, 100), (0, 255, 0, 255)).save(logo)
    frame = NewsFrameRenderer(sample_scene(logo_path=logo), LAYOUT, FPS).static_frame
    pixels = region(frame, LAYOUT.logo).reshape(-1, 3)
    assert (pixels == (0, 255, 0)).all(axis=1).sum() > 5000


def test_render_rejects_non_image_head(renderer):
    with pytest.raises(ValueError, match="uint8"):
        renderer.render(np.zeros((64, 64), np.uint8), 0)
    with pytest.raises(ValueError, match="uint8"):
        renderer.render(np.zeros((64, 64, 3), np.float32), 0)


# -- the face-centred cover crop ------------------------------------------------------------


def head_with_face(height: int, width: int, box) -> np.ndarray:
    head = np.full((height, width, 3), 90, np.uint8)
    x0, y0, x1, y1 = box
    head[y0:y1, x0:x1] = MARKER
    return head


def marker_centre(frame: np.ndarray) -> tuple[float, float, np.ndarray]:
    ys, xs = np.nonzero((frame == MARKER).all(axis=2))
    assert len(xs) > 100, "the face is not in the frame"
    return xs.mean(), ys.mean(), np.stack([xs, ys], axis=1)


def test_face_box_centres_face_horizontally_in_wide_image():
    box = (650, 250, 750, 350)  # well right of the image centre (640 of 1280)
    head = head_with_face(720, 1280, box)
    renderer = NewsFrameRenderer(sample_scene(), LAYOUT, FPS)
    x, _, points = marker_centre(renderer.render(head, 0, face_box=box))
    px0, py0, px1, py1 = LAYOUT.head_inner
    assert abs(x - (px0 + px1) / 2) < 3
    assert (points[:, 0] >= px0).all() and (points[:, 0] < px1).all()


def test_face_box_puts_face_in_upper_middle_of_tall_image():
    box = (250, 500, 350, 600)
    head = head_with_face(1400, 600, box)
    renderer = NewsFrameRenderer(sample_scene(), LAYOUT, FPS)
    _, y, _ = marker_centre(renderer.render(head, 0, face_box=box))
    px0, py0, px1, py1 = LAYOUT.head_inner
    assert 0.3 < (y - py0) / (py1 - py0) < 0.5


def test_crop_stays_inside_image_for_face_at_the_edge():
    renderer = NewsFrameRenderer(sample_scene(), LAYOUT, FPS)
    crop = renderer.crop_for((720, 1280, 3), face_box=(1200, 0, 1280, 60))
    assert crop.x0 >= 0 and crop.y0 >= 0 and crop.x1 <= 1280 and crop.y1 <= 720
    assert crop.x1 == 1280  # pushed as far toward the face as the image allows
    panel_w = LAYOUT.head_inner[2] - LAYOUT.head_inner[0]
    panel_h = LAYOUT.head_inner[3] - LAYOUT.head_inner[1]
    assert abs(crop.width / crop.height - panel_w / panel_h) < 0.01  # cover keeps the aspect


def test_locked_crop_does_not_follow_the_face():
    box = (650, 250, 750, 350)
    head = head_with_face(720, 1280, box)
    renderer = NewsFrameRenderer(sample_scene(), LAYOUT, FPS)
    locked = renderer.lock_crop(head.shape, box)
    first = renderer.render(head, 0, face_box=box)
    jittered = renderer.render(head, 0, face_box=(600, 240, 700, 340))
    assert renderer.locked_crop == locked
    assert np.array_equal(first, jittered)
    # A restorer may double the frame size: the same framing then applies, scaled.
    doubled = renderer.render(cv2.resize(head, (2560, 1440), interpolation=cv2.INTER_NEAREST), 0)
    assert abs(marker_centre(doubled)[0] - marker_centre(first)[0]) < 2
    assert abs(marker_centre(doubled)[1] - marker_centre(first)[1]) < 2
    renderer.unlock_crop()
    assert not np.array_equal(first, renderer.render(head, 0, face_box=(600, 240, 700, 340)))


# -- encoding -------------------------------------------------------------------------------


def test_encode_two_seconds_with_audio(tmp_path):
    audio = write_sine_wav(tmp_path / "tone.wav", 2.0)
    out = encode(tmp_path / "news.mp4", 2.0, audio)
    info = probe(out)
    assert info.video_codec == "h264" and info.pix_fmt == "yuv420p"
    assert (info.width, info.height) == (1920, 1080) and info.fps == pytest.approx(25)
    assert info.has_audio and info.audio_codec == "aac" and info.audio_sample_rate == 48000
    assert abs(info.duration_s - 2.0) <= 0.1
    assert info.faststart
    assert sorted(p.name for p in tmp_path.iterdir()) == ["news.mp4", "tone.wav"]


def test_short_audio_is_padded_with_silence(tmp_path):
    audio = write_sine_wav(tmp_path / "short.wav", 0.5)
    out = encode(tmp_path / "padded.mp4", 2.0, audio, size=(320, 240))
    info = probe(out)
    assert info.has_audio and abs(info.duration_s - 2.0) <= 0.1
    assert count_video_frames(out) == 2 * FPS
    samples = decode_audio(out)
    assert abs(len(samples) / 48000 - 2.0) <= 0.005  # the audio track spans the whole video
    assert np.sqrt(np.mean(samples[: 48000 // 4] ** 2)) > 0.1  # the tone
    assert np.abs(samples[48000:]).max() < 0.01  # then silence


def test_long_audio_is_cut_to_the_video(tmp_path):
    audio = write_sine_wav(tmp_path / "long.wav", 3.0)
    out = encode(tmp_path / "cut.mp4", 1.0, audio, size=(320, 240))
    assert abs(probe(out).duration_s - 1.0) <= 0.1
    assert count_video_frames(out) == FPS  # no frame lost to the audio's end
    assert abs(len(decode_audio(out)) / 48000 - 1.0) <= 0.005


def test_video_without_audio(tmp_path):
    info = probe(encode(tmp_path / "silent.mp4", 1.0, None, size=(320, 240)))
    assert not info.has_audio and info.video_codec == "h264" and info.faststart
    assert abs(info.duration_s - 1.0) <= 0.1


def test_exception_inside_with_leaves_no_file(tmp_path):
    out = tmp_path / "broken.mp4"
    out.write_bytes(b"previous good video")
    with pytest.raises(KeyError):
        with VideoEncoder(out, FPS, size=(320, 240)) as video:
            video.write(np.zeros((240, 320, 3), np.uint8))
            assert any(p.name.endswith(".partial.mp4") for p in tmp_path.iterdir())
            raise KeyError("boom")
    assert out.read_bytes() == b"previous good video"
    assert [p.name for p in tmp_path.iterdir()] == ["broken.mp4"]


def wav_with_unknown_codec(path: Path) -> Path:
    """A well-formed WAV whose format tag no decoder knows: readable header, no audio."""
    data = b"\x01\x02" * 16000
    fmt = struct.pack("<HHIIHH", 0x1234, 1, 16000, 32000, 2, 16)
    chunks = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(chunks)) + chunks)
    return path


def write_and_expect_failure(out: Path, **options) -> str:
    with pytest.raises(EncodeError) as error:
        with VideoEncoder(out, FPS, size=(320, 240), **options) as video:
            for _ in range(5):
                video.write(np.zeros((240, 320, 3), np.uint8))
    return str(error.value)


def test_corrupt_audio_fails_before_encoding(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio" * 10)
    message = write_and_expect_failure(tmp_path / "out.mp4", audio_path=corrupt)
    assert "corrupt.wav" in message and "Invalid data" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.wav"]


def test_ffmpeg_failure_while_muxing_raises_readable_error(tmp_path):
    odd = wav_with_unknown_codec(tmp_path / "odd.wav")
    message = write_and_expect_failure(tmp_path / "out.mp4", audio_path=odd)
    assert "adding the audio from" in message and "odd.wav" in message
    assert "exit code" in message and "decoder" in message  # ffmpeg's own words follow
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.wav"]


def test_ffmpeg_failure_while_encoding_raises_readable_error(tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous good video")
    message = write_and_expect_failure(out, preset="warp-speed")
    assert "invalid preset 'warp-speed'" in message
    assert out.read_bytes() == b"previous good video"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_missing_output_directory_raises_before_encoding(tmp_path):
    missing = tmp_path / "nope" / "out.mp4"
    with pytest.raises(OutputPathError, match="nope"):
        VideoEncoder(missing, FPS)
    assert not missing.parent.exists()


def test_output_directory_that_is_a_file_raises(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputPathError, match="file"):
        with VideoEncoder(blocker / "out.mp4", FPS):
            pytest.fail("the with-block must not run")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_unwritable_output_directory_raises():
    """A user who may not write the folder is refused before encoding, and nothing is left
    there (as nobody when the tests run as root, as CI does)."""
    with unprivileged.shared_dir() as shared:
        locked = shared / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        with pytest.raises(OutputPathError, match=r"not writable: .*locked"):
            unprivileged.call(VideoEncoder, locked / "out.mp4", FPS)
        assert list(locked.iterdir()) == []


def test_wrong_frame_shape_raises_and_leaves_nothing(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(ValueError, match=r"\(1080, 1920, 3\)"):
        with VideoEncoder(out, FPS) as video:
            video.write(np.zeros((720, 1280, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        with VideoEncoder(out, FPS) as video:
            video.write(np.zeros((1080, 1920, 3), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_zero_frames_is_an_error(tmp_path):
    with pytest.raises(EncodeError, match="no frames"):
        with VideoEncoder(tmp_path / "empty.mp4", FPS, size=(320, 240)):
            pass
    assert list(tmp_path.iterdir()) == []


# -- probing --------------------------------------------------------------------------------


def test_probe_detects_a_file_without_faststart(tmp_path):
    plain = tmp_path / "plain.mp4"
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=10:duration=1",
            "-c:v",
            "libx264",
            str(plain),
        ],
        check=True,
    )
    assert not is_faststart(plain)
    info = probe(plain)
    assert (info.width, info.height, info.fps) == (160, 120, 10) and not info.has_audio


def test_probe_reads_wav_and_rejects_non_media(tmp_path):
    info = probe(write_sine_wav(tmp_path / "tone.wav", 1.0, rate=16000))
    assert info.has_audio and info.audio_sample_rate == 16000 and info.audio_channels == 1
    assert not info.has_video and not info.faststart
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ProbeError):
        probe(junk)


def test_packaged_fonts_load_and_missing_fonts_fall_back(monkeypatch):
    from talkinghead.compositor import fonts

    assert fonts.load_font(30, bold=True).getname() == ("DejaVu Sans", "Bold")
    monkeypatch.setattr(fonts, "FONT_PACKAGE", "talkinghead.assets.no_such_fonts")
    fonts.load_font.cache_clear()
    fonts._packaged_font_bytes.cache_clear()
    try:
        fallback = fonts.load_font(30)
        assert fallback.getname()[0] != "DejaVu Sans" and fallback.getlength("News") > 20
    finally:
        fonts.load_font.cache_clear()
        fonts._packaged_font_bytes.cache_clear()
