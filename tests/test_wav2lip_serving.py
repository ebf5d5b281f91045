"""The lipsync server with the Wav2Lip engine on deterministic weights in the official
layout: it syncs the demo clip, and every kind of bad input gets a clear answer."""

from __future__ import annotations

import shutil

import grpc
import numpy as np
import pytest

from talkinghead.local_stack import LocalStack, free_port
from talkinghead.orchestrator.stage_clients import (
    LipSyncClient,
    StageFailed,
    open_channel,
    wait_for_serving,
)
from talkinghead.services.common.audio import decode_audio_file
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.lipsync import wav2lip_weights as ww
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
            port = free_port()
            stack.start_server("lipsync", port, f"lipsync-{name}", "--weights", str(folder),
                               "--batch-size", "16")
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


def test_syncs_the_demo_clip(servers, demo_clip, assets_dir):
    audio = decode_audio_file(assets_dir / "speech_3s.wav")
    out = sync(servers["s3fd"], demo_clip, audio)
    assert [f.index for f in out] == list(range(80))
    changed = [np.abs(o.image.astype(int) - f.image.astype(int)).sum(axis=2) > 0
               for o, f in zip(out, demo_clip, strict=True)]
    for mask, frame in zip(changed, demo_clip, strict=True):
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = frame.face.box
        # the generator's patch lands on the (padded, smoothed) face box and nowhere else
        assert len(xs) > 100
        assert xs.min() >= x0 - 6 and xs.max() <= x1 + 6
        assert ys.min() >= y0 - 6 and ys.max() <= y1 + 10 + 6


def test_frames_without_geometry_use_the_detector(servers, photo, assets_dir):
    audio = decode_audio_file(assets_dir / "speech_3s.wav")
    frames = [VideoFrame(i, photo) for i in range(4)]
    out = sync(servers["haar"], frames, audio)
    assert len(out) == 4 and all((o.image != photo).any() for o in out)
    # S3FD on deterministic weights finds arbitrary boxes; the path must still hold
    # together: every frame comes back, synced or (no usable box) passed through.
    out = sync(servers["s3fd"], frames, audio, pass_through_faceless=True)
    assert [o.index for o in out] == [0, 1, 2, 3]


def test_silent_audio_is_valid(servers, demo_clip, assets_dir):
    audio = decode_audio_file(assets_dir / "silence.wav")
    out = sync(servers["s3fd"], demo_clip[:10], audio)
    assert len(out) == 10


def test_faceless_frames_are_named_or_passed_through(servers, photo, demo_face, assets_dir):
    audio = decode_audio_file(assets_dir / "speech_3s.wav")
    blank = np.full_like(photo, 127)
    frames = [VideoFrame(i, blank if i in (2, 3, 4, 7) else photo) for i in range(9)]
    with pytest.raises(StageFailed) as info:
        sync(servers["haar"], frames, audio)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "no face found in frame(s) 2-4, 7" in info.value.details
    out = sync(servers["haar"], frames, audio, pass_through_faceless=True)
    assert [f.index for f in out] == list(range(9))
    for i in (2, 3, 4, 7):
        assert np.array_equal(out[i].image, blank)
    assert not np.array_equal(out[0].image, photo)


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
