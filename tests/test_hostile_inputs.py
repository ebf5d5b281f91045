"""Decompression bombs and over-long audio (#14 item 3), refused from their headers.

A 2.6 MB PNG that states 30000x30000 pixels (2.7 GB once decoded) and a WAV whose header
states 2 hours are refused by what their headers say, naming the size and the limit, with
nothing decoded: in-process for every accepted image format, through the real CLI (exit 2,
its peak memory measured by the kernel), at real model servers over gRPC
(INVALID_ARGUMENT, the server's peak memory read from /proc) and through a real Celery
worker on Redis (the job FAILS with the reason; its pool process's peak memory read too).

Every bomb here is real: the PNG decodes in full to 2.7 GB of zeros (the same generator
makes a small one that is decoded below); the 2 h WAV is a 1.3 GB sparse file that ffmpeg
decodes to 2 hours of silence.
"""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest

from talkinghead.local_stack import LocalStack
from talkinghead.orchestrator.stage_clients import open_channel
from talkinghead.services.common import audio as audio_mod
from talkinghead.services.common import wire
from talkinghead.services.common.audio import (
    decode_audio_file,
    ffmpeg_exe,
    stated_duration,
    wav_stated_duration,
)
from talkinghead.services.common.errors import InputError
from talkinghead.services.common.wire import (
    check_image_header,
    decode_image,
    image_size_from_header,
)
from talkinghead.v1 import (
    frames_pb2,
    lipsync_pb2,
    lipsync_pb2_grpc,
    motion_pb2,
    motion_pb2_grpc,
    restore_pb2,
    restore_pb2_grpc,
)

BOMB_SIDE = 30_000
MB = 1024  # ru_maxrss and VmHWM are in kB
# What refusing a bomb may add to a process's peak memory. Decoding this one adds 5.4 GB
# (the CLI before the fix: 20 s, 5.4 GB peak); reading its header adds nothing measurable.
RSS_ALLOWANCE_KB = 150 * MB


# ------------------------------------------------------------------ real hostile files


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _deflated_zeros(n: int) -> bytes:
    """Raw deflate blocks for n zero bytes, ending on a full flush (no zlib header)."""
    c = zlib.compressobj(9)
    return (c.compress(bytes(n)) + c.flush(zlib.Z_FULL_FLUSH))[2:]


def png_bomb(width: int, height: int) -> bytes:
    """A valid 8-bit RGB PNG of width x height black pixels, built in milliseconds.

    Its zlib stream is a 4 MiB block of deflated zeros repeated (a full flush makes each
    block stand alone, so the same bytes serve every time), an empty final block and the
    Adler-32 of all-zero data, computed in closed form: a decoder inflates every row.
    """
    total = (1 + 3 * width) * height  # a filter byte (0: none) and RGB per row
    piece = 1 << 22
    n, rest = divmod(total, piece)
    parts = [b"\x78\xda"] + [_deflated_zeros(piece)] * n
    if rest:
        parts.append(_deflated_zeros(rest))
    parts += [b"\x03\x00", struct.pack(">I", ((total % 65521) << 16) | 1)]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b""))


def wav_header(rate: int, channels: int, bits: int, seconds: float,
               data_size: int | None = None) -> bytes:
    block = channels * bits // 8
    size = int(rate * seconds) * block if data_size is None else data_size
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    return (b"RIFF" + struct.pack("<I", (36 + size) & 0xFFFFFFFF) + b"WAVE"
            + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size))


def sparse_wav(path: Path, rate: int, channels: int, bits: int, seconds: float) -> Path:
    """A real WAV of ``seconds`` of silence, every byte there, stored sparse on disk."""
    header = wav_header(rate, channels, bits, seconds)
    with path.open("wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + int(rate * seconds) * channels * bits // 8)
    return path


def encode_silence(path: Path, seconds: float, *codec: str) -> Path:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "anullsrc=r=8000:cl=mono", "-t", str(seconds), *codec, str(path)],
                   check=True)
    return path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostile")
    (d / "bomb.png").write_bytes(png_bomb(BOMB_SIDE, BOMB_SIDE))
    sparse_wav(d / "two_hours.wav", 44_100, 2, 16, 7200)  # 1.27 GB, CD quality
    sparse_wav(d / "two_hours_8k.wav", 8_000, 1, 8, 7200)  # 57.6 MB: fits one gRPC message
    encode_silence(d / "eleven_minutes.m4a", 660, "-c:a", "aac", "-b:a", "16k")
    return d


# ------------------------------------------------------------------ measuring processes


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_kb: int  # the kernel's high-water mark for the process (and children it reaped)


def run_measured(cmd: list[str], timeout: float = 120, env: dict | None = None) -> Measured:
    """Run ``cmd``; its exit code, output, wall time and peak RSS (from wait4's rusage)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env={**os.environ, "TALKINGHEAD_LOG_FORMAT": "plain",
                                     **(env or {})})
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > timeout:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise AssertionError(f"{cmd} ran past {timeout} s")
            time.sleep(0.02)
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        return Measured(proc.returncode, out.read().decode(), err.read().decode(), seconds,
                        usage.ru_maxrss)


def vm_hwm_kb(pid: int) -> int:
    """A running process's peak resident memory so far (VmHWM in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def cpu_seconds(pid: int) -> float:
    """CPU a process used so far, its reaped children (ffmpeg) included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


def render_cli(face: Path, audio: Path, card: Path, out: Path, **env: str) -> Measured:
    return run_measured([sys.executable, "-m", "talkinghead.cli", "render", "--face", str(face),
                         "--audio", str(audio), "--card", str(card), "--out", str(out)],
                        env=env)


# ------------------------------------------------------------------ in process: images


def test_bomb_generator_makes_real_pngs():
    """The generator's PNGs decode, to the size they state (here a small one)."""
    data = png_bomb(301, 203)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (203, 301, 3) and not image.any()
    from PIL import Image

    with Image.open(io.BytesIO(data)) as pil:
        pil.load()  # Pillow's inflater checks the Adler-32 too
        assert pil.size == (301, 203)
    bomb = png_bomb(BOMB_SIDE, BOMB_SIDE)
    assert len(bomb) < 3_000_000  # 2.7 GB of pixels in 2.6 MB


def huge_variants() -> dict[str, bytes]:
    """For each accepted format, a file whose header states far too many pixels."""
    small = (np.arange(40 * 48 * 3) % 251).astype(np.uint8).reshape(40, 48, 3)

    def encoded(ext: str) -> bytearray:
        ok, buf = cv2.imencode(ext, small)
        assert ok
        return bytearray(buf.tobytes())

    jpeg = encoded(".jpg")
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", BOMB_SIDE, BOMB_SIDE)  # height, width

    bmp = encoded(".bmp")
    bmp[18:26] = struct.pack("<ii", BOMB_SIDE, -BOMB_SIDE)  # negative height: top-down

    from PIL import Image

    def pil(fmt: str, **kw) -> bytearray:
        buffer = io.BytesIO()
        Image.fromarray(small).save(buffer, fmt, **kw)
        return bytearray(buffer.getvalue())

    lossless = pil("WEBP", lossless=True)  # VP8L: 14-bit sizes, up to 16384
    assert lossless[12:16] == b"VP8L"
    bits = (16383) | (16383 << 14) | (lossless[21 + 3] >> 4 << 28)
    lossless[21:25] = struct.pack("<I", bits)
    lossy = pil("WEBP", quality=50)  # VP8: 14-bit sizes
    assert lossy[12:16] == b"VP8 "
    lossy[26:30] = struct.pack("<HH", 16383, 16383)
    extended = pil("WEBP", save_all=True, append_images=[Image.fromarray(255 - small)])  # VP8X
    assert extended[12:16] == b"VP8X"
    extended[24:30] = (BOMB_SIDE - 1).to_bytes(3, "little") * 2

    tiff = pil("TIFF", compression="tiff_lzw")
    ifd = struct.unpack("<I", tiff[4:8])[0]
    for i in range(struct.unpack("<H", tiff[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        tag = struct.unpack("<H", tiff[entry:entry + 2])[0]
        if tag in (256, 257):  # ImageWidth, ImageLength
            tiff[entry + 2:entry + 12] = struct.pack("<HII", 4, 1, BOMB_SIDE)  # LONG
    return {"PNG": png_bomb(BOMB_SIDE, BOMB_SIDE), "JPEG": bytes(jpeg), "BMP": bytes(bmp),
            "WebP lossless": bytes(lossless), "WebP lossy": bytes(lossy),
            "WebP extended": bytes(extended), "TIFF": bytes(tiff)}


@pytest.fixture
def no_image_decoding(monkeypatch):
    """Any attempt to decode pixels fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(wire.cv2, "imdecode", refuse)
    monkeypatch.setattr(wire.cv2, "imread", refuse)


HUGE_FORMATS = ["PNG", "JPEG", "BMP", "WebP lossless", "WebP lossy", "WebP extended", "TIFF"]


@pytest.mark.parametrize("fmt", HUGE_FORMATS)
def test_every_format_is_refused_from_its_header(fmt, no_image_decoding):
    data = huge_variants()[fmt]
    size = image_size_from_header(data)
    assert size[0] * size[1] > 200_000_000, size
    started = time.perf_counter()
    with pytest.raises(InputError) as info:
        decode_image(data, what="the face photo (field image)", max_pixels=40_000_000)
    assert time.perf_counter() - started < 0.5
    message = str(info.value)
    assert f"the face photo (field image) has {size[0]}x{size[1]} pixels" in message
    assert "more than the 40000000 allowed" in message and "not decoded" in message


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".bmp", ".tiff", "webp-lossless",
                                 "jpeg-progressive", "webp-animated"])
def test_header_size_is_the_decoded_size(ext):
    """The header readers agree with the decoder on ordinary files of every format."""
    image = (np.random.default_rng(1).random((37, 53, 3)) * 255).astype(np.uint8)
    if ext.startswith("."):
        data = cv2.imencode(ext, image)[1].tobytes()
    else:
        from PIL import Image

        buffer = io.BytesIO()
        pil = Image.fromarray(image)
        if ext == "webp-lossless":
            pil.save(buffer, "WEBP", lossless=True)
        elif ext == "jpeg-progressive":
            pil.save(buffer, "JPEG", progressive=True)
        else:
            pil.save(buffer, "WEBP", save_all=True, append_images=[Image.fromarray(255 - image)])
        data = buffer.getvalue()
    assert image_size_from_header(data) == (53, 37)
    assert decode_image(data).shape == (37, 53, 3)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIH", "PNG header cannot be read"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01", "JPEG header cannot be read"),
        (b"\xff\xd8\xff\xda\x00\x08" + bytes(8), "JPEG header cannot be read"),  # no frame
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(14), "WebP header cannot be read"),
        (b"BM\x00\x00", "BMP header cannot be read"),
        (b"II*\x00\xff\xff\xff\x7f", "TIFF header cannot be read"),
        (b"GIF89a\x10\x00\x10\x00", "not a decodable image (JPEG, PNG, WebP, BMP, TIFF)"),
        (b"this is a text file", "not a decodable image (JPEG, PNG, WebP, BMP, TIFF)"),
    ],
)
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's, on the cut-off TIFF
def test_an_unreadable_header_is_refused_never_decoded(data, words, no_image_decoding):
    with pytest.raises(InputError, match="^image .*" + re.escape(words)):
        decode_image(data)


def test_the_png_bomb_is_refused_at_frame_and_photo_limits(no_image_decoding):
    frame = frames_pb2.Frame(index=3, format=frames_pb2.PIXEL_FORMAT_PNG,
                             data=png_bomb(BOMB_SIDE, BOMB_SIDE))
    with pytest.raises(InputError, match="frame 3 has 30000x30000 pixels, more than the "
                                         "16777216 allowed"):
        wire.frame_from_proto(frame)
    with pytest.raises(InputError, match="30000x30000 pixels, more than the 40000000 allowed"):
        check_image_header(io.BytesIO(frame.data), 40_000_000, "photo")


# ------------------------------------------------------------------ in process: audio


@pytest.fixture
def no_audio_decoding(monkeypatch):
    """Any attempt to decode or resample audio fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("audio was decoded")

    monkeypatch.setattr(audio_mod, "_ffmpeg", refuse)
    monkeypatch.setattr(audio_mod, "_source_format", refuse)
    from talkinghead.services.common import resample

    monkeypatch.setattr(resample, "resample_sinc", refuse)


@pytest.mark.parametrize("name", ["two_hours.wav", "two_hours_8k.wav", "eleven_minutes.m4a"])
def test_long_audio_is_refused_from_its_header(hostile, name, no_audio_decoding):
    started = time.perf_counter()
    with pytest.raises(InputError) as info:
        decode_audio_file(hostile / name, max_seconds=600)
    assert time.perf_counter() - started < 2.0
    stated = "660.0" if name.endswith(".m4a") else "7200.0"
    assert str(info.value) == (f"audio file {name!r} is longer than the 600 s limit: its "
                               f"header states {stated} s (refused before decoding)")


def test_wav_header_lengths(tmp_path):
    """What a WAV header states, and what stands in when it states no usable size."""
    exact = sparse_wav(tmp_path / "exact.wav", 16_000, 1, 16, 3)
    assert wav_stated_duration(exact) == 3.0
    # a streaming writer's placeholder (ffmpeg to a pipe writes 0xFFFFFFFF): the file's size
    piped = subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                            "anullsrc=r=16000:cl=mono", "-t", "3", "-f", "wav", "pipe:1"],
                           capture_output=True, check=True).stdout
    assert b"data\xff\xff\xff\xff" in piped
    (tmp_path / "piped.wav").write_bytes(piped)
    assert wav_stated_duration(tmp_path / "piped.wav") == pytest.approx(3.0, abs=0.01)
    # a header stating 2 h over 1 s of data (cut off, or a lie): a decoder can only read
    # the 1 s present, so that is its length, and it decodes
    cut = tmp_path / "cut.wav"
    cut.write_bytes(wav_header(16_000, 1, 16, 7200) + bytes(32_000))
    assert wav_stated_duration(cut) == 1.0
    assert len(decode_audio_file(cut, max_seconds=600)) == 16_000
    assert wav_stated_duration(tmp_path / "nothing.wav") is None
    (tmp_path / "text.wav").write_text("not a wav")
    assert wav_stated_duration(tmp_path / "text.wav") is None


def test_an_estimated_length_is_checked_after_a_bounded_decode(tmp_path):
    """An MP3 without a Xing header states no length, ffmpeg only estimates it from the
    bitrate (often far off for speech): it is decoded, at most one second past the limit,
    and refused then."""
    mp3 = encode_silence(tmp_path / "no_xing.mp3", 12, "-c:a", "libmp3lame", "-b:a", "32k",
                         "-write_xing", "0")
    seconds, exact = stated_duration(mp3)
    assert not exact and seconds == pytest.approx(12, abs=0.5)
    with pytest.raises(InputError) as info:
        decode_audio_file(mp3, max_seconds=5)
    assert str(info.value) == "audio file 'no_xing.mp3' is longer than the 5 s limit"


# ------------------------------------------------------------------ the CLI


def test_cli_refuses_the_png_bomb_from_its_header(hostile, assets_dir, tmp_path):
    card, speech = assets_dir / "card.json", assets_dir / "speech_3s.wav"
    out = tmp_path / "out.mp4"
    # the same command with a face that is no image: what the CLI costs anyway
    baseline = render_cli(assets_dir / "not_image.jpg", speech, card, out)
    assert baseline.returncode == 2, baseline.stderr
    bomb = render_cli(hostile / "bomb.png", speech, card, out)
    assert bomb.returncode == 2, bomb.stderr
    assert ("error: face image 'bomb.png' has 30000x30000 pixels, more than the 40000000 "
            "allowed (refused from its header, not decoded)") in bomb.stderr
    assert bomb.peak_rss_kb < baseline.peak_rss_kb + RSS_ALLOWANCE_KB, (bomb, baseline)
    assert bomb.seconds < baseline.seconds + 5.0, (bomb.seconds, baseline.seconds)
    assert not out.exists()


def test_cli_refuses_two_hours_of_audio_from_its_header(hostile, assets_dir, demo_face,
                                                        tmp_path):
    card, out = assets_dir / "card.json", tmp_path / "out.mp4"
    baseline = render_cli(demo_face, assets_dir / "not_audio.wav", card, out)
    assert baseline.returncode == 2, baseline.stderr
    long = render_cli(demo_face, hostile / "two_hours.wav", card, out)
    assert long.returncode == 2, long.stderr
    assert ("error: audio file 'two_hours.wav' is longer than the 600 s limit: its header "
            "states 7200.0 s (refused before decoding)") in long.stderr
    # before: 601 s decoded and resampled, 41 s here; now as fast as a file that is no audio
    assert long.seconds < baseline.seconds + 5.0, (long.seconds, baseline.seconds)
    assert long.peak_rss_kb < baseline.peak_rss_kb + RSS_ALLOWANCE_KB, (long, baseline)
    # the limit is the operator's
    short = render_cli(demo_face, hostile / "eleven_minutes.m4a", card, out,
                       TALKINGHEAD_MAX_AUDIO_SECONDS="60")
    assert short.returncode == 2
    assert ("error: audio file 'eleven_minutes.m4a' is longer than the 60 s limit: its "
            "header states 660.0 s") in short.stderr


# ------------------------------------------------------------------ the servers


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Lite motion, lipsync and restore servers as real processes (default limits)."""
    stack = LocalStack(tmp_path_factory.mktemp("hostile-logs"), engine="lite")
    with stack:
        yield stack


def server_pid(stack: LocalStack, name: str) -> int:
    return next(p.popen.pid for p in stack.processes if p.name == name)


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_motion_server_refuses_bomb_photos_from_their_header(servers, hostile):
    """Four bombs at once (the default --max-streams): each INVALID_ARGUMENT naming the
    size, in well under a second, and the server's peak memory does not move."""
    pid = server_pid(servers, "motion")
    before = vm_hwm_kb(pid)
    bomb = (hostile / "bomb.png").read_bytes()
    channel = open_channel(servers.targets.motion)
    stub = motion_pb2_grpc.MotionServiceStub(channel)
    errors: list = [None] * 4
    elapsed: list = [None] * 4

    def call(i: int) -> None:
        started = time.monotonic()
        request = motion_pb2.AnimateRequest(image=bomb, template_name="talking")
        errors[i] = rpc_error(lambda: list(stub.Animate(request, timeout=60)))
        elapsed[i] = time.monotonic() - started

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    channel.close()
    for err in errors:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
        assert err.details() == (
            "the face photo (field image) has 30000x30000 pixels, more than the 40000000 "
            "allowed (refused from its header, not decoded)")
    assert max(elapsed) < 2.0, elapsed
    assert vm_hwm_kb(pid) - before < RSS_ALLOWANCE_KB, (before, vm_hwm_kb(pid))
    servers.check_alive()


def bomb_frame(index: int, bomb: bytes) -> frames_pb2.Frame:
    return frames_pb2.Frame(index=index, format=frames_pb2.PIXEL_FORMAT_PNG, data=bomb)


def test_lipsync_and_restore_refuse_bomb_frames_from_their_header(servers, hostile):
    """Frames may travel as PNG or JPEG: a bomb among them is refused by its header."""
    bomb = (hostile / "bomb.png").read_bytes()
    expected = ("frame 1 has 30000x30000 pixels, more than the 16777216 allowed "
                "(refused from its header, not decoded)")
    lipsync_pid, restore_pid = server_pid(servers, "lipsync"), server_pid(servers, "restore-0")
    peaks = vm_hwm_kb(lipsync_pid), vm_hwm_kb(restore_pid)

    channel = open_channel(servers.targets.restore[0])
    stub = restore_pb2_grpc.RestoreServiceStub(channel)
    requests = [restore_pb2.RestoreRequest(config=restore_pb2.RestoreConfig(weight=0.5),
                                           frames=[bomb_frame(1, bomb)])]
    err = rpc_error(lambda: list(stub.Restore(iter(requests), timeout=60)))
    channel.close()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details() == expected

    channel = open_channel(servers.targets.lipsync)
    stub = lipsync_pb2_grpc.LipSyncServiceStub(channel)
    pcm = np.zeros(16_000, np.int16).tobytes()
    requests = [lipsync_pb2.SyncRequest(
        config=lipsync_pb2.SyncConfig(audio=frames_pb2.Audio(pcm_s16le_16k_mono=pcm), fps=25),
        frames=[bomb_frame(1, bomb)])]
    err = rpc_error(lambda: list(stub.Sync(iter(requests), timeout=60)))
    channel.close()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details() == expected
    assert vm_hwm_kb(lipsync_pid) - peaks[0] < RSS_ALLOWANCE_KB
    assert vm_hwm_kb(restore_pid) - peaks[1] < RSS_ALLOWANCE_KB


@pytest.mark.parametrize(("name", "stated"), [("two_hours_8k.wav", "7200.0"),
                                              ("eleven_minutes.m4a", "660.0")])
def test_lipsync_server_refuses_long_audio_from_its_header(servers, hostile, demo_face, name,
                                                           stated):
    """The whole 2 h file travels (57.6 MB in one message) and is refused by its header: the
    server spends a fraction of a CPU second on it, where decoding 601 s of it and
    resampling them took seconds."""
    pid = server_pid(servers, "lipsync")
    data = (hostile / name).read_bytes()
    image = cv2.imread(str(demo_face))
    frame = frames_pb2.Frame(index=0, width=image.shape[1], height=image.shape[0],
                             format=frames_pb2.PIXEL_FORMAT_RGB24,
                             data=cv2.cvtColor(image, cv2.COLOR_BGR2RGB).tobytes())
    requests = [lipsync_pb2.SyncRequest(
        config=lipsync_pb2.SyncConfig(audio=frames_pb2.Audio(encoded_file=data), fps=25),
        frames=[frame])]
    channel = open_channel(servers.targets.lipsync)
    stub = lipsync_pb2_grpc.LipSyncServiceStub(channel)
    cpu = cpu_seconds(pid)
    started = time.monotonic()
    err = rpc_error(lambda: list(stub.Sync(iter(requests), timeout=120)))
    elapsed = time.monotonic() - started
    used = cpu_seconds(pid) - cpu
    channel.close()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is longer than the 600 s limit: its header states " + stated in err.details()
    assert used < 1.5, used
    assert elapsed < 5.0, elapsed


def test_lipsync_server_refuses_long_raw_pcm_by_its_length(servers):
    """Raw 16 kHz PCM states its length by its size: 610 s (19.5 MB) is refused before the
    float copy is made."""
    pcm = bytes(2 * 16000 * 610)
    channel = open_channel(servers.targets.lipsync)
    stub = lipsync_pb2_grpc.LipSyncServiceStub(channel)
    request = lipsync_pb2.SyncRequest(config=lipsync_pb2.SyncConfig(
        audio=frames_pb2.Audio(pcm_s16le_16k_mono=pcm), fps=25))
    err = rpc_error(lambda: list(stub.Sync(iter([request]), timeout=60)))
    channel.close()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == ("config.audio is longer than the 600 s limit: it holds 610.0 s "
                             "of 16 kHz PCM")


# ------------------------------------------------------------------ the Celery worker


@pytest.fixture(scope="module")
def worker(servers, redis_url):
    from talkinghead.orchestrator.celery_app import make_app
    from tests.celery_jobs import child_pids, wait_until

    env = {"TALKINGHEAD_BROKER_URL": redis_url, "TALKINGHEAD_RESULT_BACKEND": redis_url}
    proc = servers.start_worker("worker-hostile", env, "--queues", "hostile")
    wait_until(lambda: "ready" in proc.log_text(), 120, "the worker to be ready", poll=0.2)
    pool = child_pids(proc.popen.pid)
    assert len(pool) == 1, pool
    try:
        yield make_app(redis_url, redis_url), pool[0]
    finally:
        proc.stop()
        servers.processes.remove(proc)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("face", "audio", "reason"),
    [
        ("bomb.png", None, "face image 'bomb.png' has 30000x30000 pixels, more than the "
                           "40000000 allowed (refused from its header, not decoded)"),
        (None, "two_hours.wav", "audio file 'two_hours.wav' is longer than the 600 s limit: "
                                "its header states 7200.0 s (refused before decoding)"),
    ],
)
def test_celery_job_fails_from_the_header(worker, hostile, assets_dir, demo_face, demo_card,
                                          tmp_path, face, audio, reason):
    from tests.celery_jobs import job, submit_and_wait

    app, pool_pid = worker
    out = tmp_path / "out.mp4"
    spec = job(assets_dir, demo_face, demo_card, out,
               face=str(hostile / face) if face else str(demo_face),
               audio=str(hostile / audio) if audio else str(assets_dir / "speech_3s.wav"))
    before = vm_hwm_kb(pool_pid)
    started = time.monotonic()
    result, _ = submit_and_wait(app, spec, timeout=60, queue="hostile")
    elapsed = time.monotonic() - started
    assert result.state == "FAILURE"
    assert reason in str(result.result)
    assert elapsed < 10.0, elapsed
    assert vm_hwm_kb(pool_pid) - before < RSS_ALLOWANCE_KB, (before, vm_hwm_kb(pool_pid))
    assert not out.exists()


# ------------------------------------------------------------------ template zip bombs


def npz_bomb(stated_shape: tuple[int, ...], inflated_bytes: int) -> bytes:
    """A .npz whose exp.npy states ``stated_shape`` float64 and inflates to about
    ``inflated_bytes`` (deflated zeros: 1 GB is about 1 MB on the wire)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("exp.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(
                member, {"descr": "<f8", "fortran_order": False, "shape": stated_shape})
            chunk = bytes(1 << 20)
            for _ in range(inflated_bytes >> 20):
                member.write(chunk)
    return buffer.getvalue()


TEMPLATE_BOMBS = {
    # honest about its size: 1 GB of zeros in about 1 MB
    "inflates": (npz_bomb((4_000_000, 21, 3), 1 << 30), "inflates to 1073741952 bytes"),
    # small member, header states 40 GB: numpy would allocate the stated shape first
    "states": (npz_bomb((80_000_000, 21, 3), 0), "states shape (80000000, 21, 3)"),
}


@pytest.mark.parametrize("kind", sorted(TEMPLATE_BOMBS))
def test_a_template_zip_bomb_is_refused_from_its_headers(kind):
    from talkinghead.services.motion.template import template_from_npz

    data, words = TEMPLATE_BOMBS[kind]
    started = time.monotonic()
    with pytest.raises(InputError, match=re.escape(words)):
        template_from_npz(data, "bomb")
    assert time.monotonic() - started < 1.0


def test_motion_server_refuses_a_template_zip_bomb(servers, demo_face):
    """The template travels in the request (template_npz): refused from the zip's and the
    .npy's headers, INVALID_ARGUMENT, and the server's peak memory does not move."""
    pid = server_pid(servers, "motion")
    before = vm_hwm_kb(pid)
    data, words = TEMPLATE_BOMBS["inflates"]
    channel = open_channel(servers.targets.motion)
    stub = motion_pb2_grpc.MotionServiceStub(channel)
    request = motion_pb2.AnimateRequest(image=demo_face.read_bytes(), template_npz=data)
    err = rpc_error(lambda: list(stub.Animate(request, timeout=60)))
    channel.close()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    assert words in err.details()
    assert vm_hwm_kb(pid) - before < RSS_ALLOWANCE_KB, (before, vm_hwm_kb(pid))
    servers.check_alive()


def test_a_long_template_at_a_high_rate_is_refused_not_streamed(servers, demo_face):
    """10,000 frames at 1 fps is a valid template, but asked for at 60 fps it would be a
    600,000-frame clip: refused with INVALID_ARGUMENT naming the length, at once."""
    n = 10_000
    buffer = io.BytesIO()
    np.savez(buffer, scale=np.ones((n, 1), np.float32),
             R=np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)),
             exp=np.zeros((n, 21, 3), np.float32), t=np.zeros((n, 3), np.float32),
             fps=np.asarray(1.0))
    channel = open_channel(servers.targets.motion)
    stub = motion_pb2_grpc.MotionServiceStub(channel)
    request = motion_pb2.AnimateRequest(image=demo_face.read_bytes(),
                                        template_npz=buffer.getvalue(),
                                        options=motion_pb2.MotionOptions(fps=60))
    started = time.monotonic()
    err = rpc_error(lambda: list(stub.Animate(request, timeout=60)))
    channel.close()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    assert "lasts 10000 s: at 60 fps that is 600000 frames, more than the 10000" in err.details()
    assert time.monotonic() - started < 5.0
