"""The lipsync server with the Wav2Lip engine on deterministic weights in the official
layout: it syncs the demo clip, and every kind of bad input gets a clear answer."""

from __future__ import annotations

import shutil

import grpc
import numpy as np
import pytest

from talkinghead.local_stack import LocalStack
from talkinghead.orchestrator.stage_clients import (
    LipSyncClient,
    StageFailed,
    open_channel,
    wait_for_serving,
)
from talkinghead.services.common.audio import (
    decode_audio_file,
    float_to_pcm_s16le,
    pcm_s16le_to_float,
)
from talkinghead.services.common.face_detection import largest_face
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.lipsync import face_window as fw
from talkinghead.services.lipsync import wav2lip_weights as ww
from talkinghead.services.lipsync.s3fd_detect import detect_faces
from talkinghead.services.lipsync.wav2lip_engine import MIN_FACE_PIXELS, Wav2LipEngine
from talkinghead.services.motion.lite_engine import LiteMotionEngine
from talkinghead.services.motion.options import MotionOptions
from talkinghead.services.motion.template import load_template

FPS = 25.0


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("w2l-weights")
    ww.write_deterministic_checkpoints(root, "talkinghead-a")
    return root


@pytest.fixture(scope="module")
def servers(weights, tmp_path_factory):
    """Two Wav2Lip servers: with S3FD, and without it (Haar finds faces instead)."""
    no_s3fd = tmp_path_factory.mktemp("w2l-no-s3fd")
    shutil.copytree(weights, no_s3fd, dirs_exist_ok=True)
    (no_s3fd / ww.FILES["s3fd"]).unlink()
    stack = LocalStack(tmp_path_factory.mktemp("w2l-logs"), engine="wav2lip")
    targets = {}
    try:
        for name, folder in (("s3fd", weights), ("haar", no_s3fd)):
            port = stack.start_server("lipsync", 0, f"lipsync-{name}", "--weights",
                                      str(folder), "--batch-size", "16").port
            targets[name] = f"127.0.0.1:{port}"
        for target in targets.values():
            channel = open_channel(target)
            wait_for_serving(channel, "lipsync", target, 120)
            channel.close()
        yield targets
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def demo_clip(photo):
    """The demo motion clip (lite motion: real face geometry on every frame), 80 frames."""
    template = load_template("talking").resample(FPS)
    clip = list(LiteMotionEngine().animate(photo, template, MotionOptions(fps=FPS)))
    return [VideoFrame(i, clip[i % len(clip)].image, clip[i % len(clip)].face) for i in range(80)]


def sync(target, frames, audio, **kwargs):
    client = LipSyncClient(target, "test-w2l")
    try:
        return list(client.sync(frames, audio, FPS, **kwargs))
    finally:
        client.close()


@pytest.fixture(scope="module")
def local(weights) -> Wav2LipEngine:
    """The same engine in this process: what a server must give back for the same input."""
    return Wav2LipEngine(weights, "cpu", batch_size=16)


def local_sync(engine: Wav2LipEngine, frames, audio: np.ndarray, **kwargs) -> list[VideoFrame]:
    """In-process sync of the audio exactly as it travels (16-bit PCM), at the same fps."""
    wire = pcm_s16le_to_float(float_to_pcm_s16le(audio))
    return list(engine.sync(frames, wire, FPS, **kwargs))


def assert_same_frames(served: list[VideoFrame], expected: list[VideoFrame]) -> None:
    """Same indices in the same order, the same pictures up to float noise (another
    process may run other thread counts; the output is truncated to uint8)."""
    assert [f.index for f in served] == [f.index for f in expected]
    for s, e in zip(served, expected, strict=True):
        diff = np.abs(s.image.astype(int) - e.image.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3, (s.index, diff.max())


def changed_box(out: np.ndarray, before: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the pixels that differ, inclusive; None if none do."""
    ys, xs = np.nonzero((out != before).any(axis=2))
    return (xs.min(), ys.min(), xs.max(), ys.max()) if len(xs) else None


def padded(rect, frame: np.ndarray) -> np.ndarray | None:
    """The engine's box for a detector rectangle: padded (chin), clamped; None if unusable."""
    if rect is None:
        return None
    box = fw.pad_boxes(np.array([rect]), *frame.shape[:2])[0]
    return box if min(box[2] - box[0], box[3] - box[1]) >= MIN_FACE_PIXELS else None


def assert_synced_in(out: np.ndarray, before: np.ndarray, box) -> None:
    """The generator's patch was pasted over ``box`` (x1, y1, x2, y2) and nowhere else."""
    changed = changed_box(out, before)
    assert changed is not None, "frame came back unchanged"
    x0, y0, x1, y1 = changed
    assert x0 >= box[0] and y0 >= box[1] and x1 < box[2] and y1 < box[3], (changed, box)
    assert (out != before).any(axis=2).sum() > 0.2 * (box[2] - box[0]) * (box[3] - box[1])


def test_syncs_the_demo_clip(servers, local, demo_clip, assets_dir):
    """Every frame comes back, in order, with the patch on its (padded, smoothed) face box,
    and equal to the in-process engine's frame for the same audio and fps: the server used
    the frame's geometry, the audio and the fps it was sent."""
    audio = decode_audio_file(assets_dir / "speech_3s.wav")
    out = sync(servers["s3fd"], demo_clip, audio)
    assert [f.index for f in out] == list(range(80))
    for o, frame in zip(out, demo_clip, strict=True):
        x0, y0, x1, y1 = frame.face.box
        assert_synced_in(o.image, frame.image, (x0 - 6, y0 - 6, x1 + 7, y1 + 10 + 7))
        assert np.array_equal(o.face.landmarks, frame.face.landmarks)
    assert_same_frames(out, local_sync(local, demo_clip, audio))


def test_frames_without_geometry_use_the_detector(servers, weights, photo, assets_dir):
    """No geometry: the patch lands on the box of the server's detector (Haar without
    s3fd.pth, S3FD with it), or, where that box is unusable, the frame passes through."""
    audio = decode_audio_file(assets_dir / "speech_3s.wav")
    frames = [VideoFrame(i, photo) for i in range(4)]
    haar_box = padded(tuple(int(v) for v in largest_face(photo).box), photo)
    assert haar_box is not None
    out = sync(servers["haar"], frames, audio)
    assert [o.index for o in out] == [0, 1, 2, 3]
    for o in out:
        assert_synced_in(o.image, photo, haar_box)
    # S3FD on deterministic weights finds an arbitrary box: where it leaves no usable face,
    # the frame passes through unchanged; where it does, the patch is on that box.
    s3fd_box = padded(detect_faces(ww.load_detector(weights), photo, "rgb")[0], photo)
    out = sync(servers["s3fd"], frames, audio, pass_through_faceless=True)
    assert [o.index for o in out] == [0, 1, 2, 3]
    for o in out:
        if s3fd_box is None:
            assert np.array_equal(o.image, photo)
        else:
            assert_synced_in(o.image, photo, s3fd_box)


def test_silent_audio_is_valid(servers, local, demo_clip, assets_dir):
    """Silence is audio like any other: every frame synced to it, as in process; and the
    mouths differ from those the speech gives (the audio reaches the generator)."""
    silence = decode_audio_file(assets_dir / "silence.wav")
    out = sync(servers["s3fd"], demo_clip[:10], silence)
    assert_same_frames(out, local_sync(local, demo_clip[:10], silence))
    speech = local_sync(local, demo_clip[:10], decode_audio_file(assets_dir / "speech_3s.wav"))
    for o, s, frame in zip(out, speech, demo_clip[:10], strict=True):
        assert changed_box(o.image, frame.image) is not None
        assert not np.array_equal(o.image, s.image), f"frame {o.index}: silence = speech"


def test_faceless_frames_are_named_or_passed_through(servers, photo, assets_dir):
    audio = decode_audio_file(assets_dir / "speech_3s.wav")
    blank = np.full_like(photo, 127)
    faceless = (2, 3, 4, 7)
    frames = [VideoFrame(i, blank if i in faceless else photo) for i in range(9)]
    with pytest.raises(StageFailed) as info:
        sync(servers["haar"], frames, audio)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "no face found in frame(s) 2-4, 7" in info.value.details
    out = sync(servers["haar"], frames, audio, pass_through_faceless=True)
    assert [f.index for f in out] == list(range(9))
    haar_box = padded(tuple(int(v) for v in largest_face(photo).box), photo)
    for o in out:
        if o.index in faceless:
            assert np.array_equal(o.image, blank)
        else:
            assert_synced_in(o.image, photo, haar_box)


def test_frames_past_the_audio_are_refused(servers, demo_clip, assets_dir):
    audio = decode_audio_file(assets_dir / "silence.wav")  # 2 s
    late = [VideoFrame(100, demo_clip[0].image, demo_clip[0].face)]  # at 4 s
    with pytest.raises(StageFailed) as info:
        sync(servers["s3fd"], late, audio)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "frame 100 is at 4.00 s, past the end of the 2.00 s audio" in info.value.details


@pytest.mark.parametrize(("audio", "words"), [("empty.wav", "audio is empty"),
                                              ("not_audio.wav", "not decodable audio")])
def test_bad_audio(servers, demo_clip, assets_dir, audio, words):
    with pytest.raises(StageFailed) as info:
        sync(servers["s3fd"], demo_clip[:2], (assets_dir / audio).read_bytes())
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and words in info.value.details
