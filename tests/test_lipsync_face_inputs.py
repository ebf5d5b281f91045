"""Wav2Lip's face input once per (motion-clip frame, box) on a replica
(services/lipsync/face_inputs.py): across two videos of one presenter the crops are made
once per distinct pair, and the frames are exactly those of an engine that makes every
input afresh."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from talkinghead.orchestrator.schedule import pingpong_schedule
from talkinghead.services.common.frames import FaceGeometry, VideoFrame
from talkinghead.services.lipsync import face_inputs as fi
from talkinghead.services.lipsync import face_window as fw
from talkinghead.services.lipsync import wav2lip_weights as ww
from talkinghead.services.lipsync.wav2lip_engine import Wav2LipEngine

FPS = 25.0
CLIP_KEY = "feedfacefeedfacefeedfacefeedface"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("w2l-weights")
    ww.write_deterministic_checkpoints(root, "talkinghead-a")
    return root


def motion_clip(n: int = 6) -> list[VideoFrame]:
    """A presenter's clip: a textured frame whose face box drifts 4 px per motion frame."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    clip = []
    for k in range(n):
        x0, y0 = 60 + 4 * k, 50 + 2 * k
        box = (float(x0), float(y0), float(x0 + 120), float(y0 + 140))
        lm = np.zeros((5, 2), np.float32)
        clip.append(VideoFrame(k, np.roll(base, 4 * k, axis=1),
                               FaceGeometry(box=box, landmarks=lm, clip_key=CLIP_KEY,
                                            clip_frame=k)))
    return clip


def video(clip: list[VideoFrame], n_out: int) -> list[VideoFrame]:
    return [VideoFrame(i, clip[k].image, clip[k].face)
            for i, k in enumerate(pingpong_schedule(len(clip), n_out))]


def speech(seconds: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 0.1
            ).astype(np.float32)


def distinct_pairs(engine: Wav2LipEngine, frames: list[VideoFrame]) -> set[tuple]:
    """The (motion frame, smoothed crop box) pairs a video needs, as the engine smooths."""
    from talkinghead.services.lipsync.box_stream import StreamingBoxSmoother

    smoother: StreamingBoxSmoother[VideoFrame] = StreamingBoxSmoother()
    pairs = []
    for f in frames:
        box = fw.pad_boxes(np.array([engine.face_rect(f)]), f.height, f.width, engine.pads)[0]
        pairs += list(smoother.push(f, box))
    pairs += list(smoother.finish())
    return {fi.face_input_key(f, fw.crop_coords(b[None])[0]) for f, b in pairs}


def test_face_inputs_made_once_per_motion_frame_and_box_across_two_videos(weights):
    clip = motion_clip()
    first, second = video(clip, 30), video(clip, 30)
    cached = Wav2LipEngine(weights, "cpu", batch_size=8)
    fresh = Wav2LipEngine(weights, "cpu", batch_size=8, face_input_cache_bytes=0)
    audio1, audio2 = speech(30 / FPS, 1), speech(30 / FPS, 2)
    out1 = list(cached.sync(first, audio1, FPS))
    pairs = distinct_pairs(cached, first)
    assert len(clip) <= len(pairs) < len(first)  # repeats to reuse, and several boxes a frame
    assert cached.face_inputs.made == len(pairs)
    assert cached.face_inputs.reused == len(first) - len(pairs)
    out2 = list(cached.sync(second, audio2, FPS))
    assert cached.face_inputs.made == len(pairs)  # the second video made none
    assert len(cached.face_inputs) == len(pairs)
    assert fresh.face_inputs.bytes == 0
    for got, want in zip(out1 + out2, list(fresh.sync(first, audio1, FPS))
                         + list(fresh.sync(second, audio2, FPS)), strict=True):
        assert got.index == want.index and np.array_equal(got.image, want.image)
    assert fresh.face_inputs.made == len(first) + len(second)
    # other speech gives other mouths from the same cached inputs
    assert not all(np.array_equal(a.image, b.image) for a, b in zip(out1, out2, strict=True))


def test_frames_without_a_clip_key_are_made_each_time(weights):
    frames = [replace(f, face=replace(f.face, clip_key="")) for f in video(motion_clip(), 12)]
    engine = Wav2LipEngine(weights, "cpu", batch_size=8)
    list(engine.sync(frames, speech(12 / FPS, 1), FPS))
    assert engine.face_inputs.made == len(frames) and len(engine.face_inputs) == 0


def test_cache_keeps_to_its_byte_budget(weights):
    engine = Wav2LipEngine(weights, "cpu", batch_size=8,
                           face_input_cache_bytes=5 * 6 * 96 * 96 * 4)
    list(engine.sync(video(motion_clip(), 30), speech(30 / FPS, 1), FPS))
    assert len(engine.face_inputs) == 5 and engine.face_inputs.bytes <= 5 * 6 * 96 * 96 * 4
