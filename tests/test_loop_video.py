"""`talkinghead loop`: the ping-pong schedule, applied to a real video file with ffmpeg."""

from __future__ import annotations

import numpy as np
import pytest

from talkinghead.compositor import VideoEncoder, probe
from talkinghead.loop_video import loop_video
from talkinghead.orchestrator.schedule import pingpong_schedule
from talkinghead.services.common.errors import InputError
from talkinghead.services.common.video_files import read_video

LEVELS = [20 + 20 * i for i in range(10)]  # frame i is a flat grey of this level


@pytest.fixture()
def ramp_clip(tmp_path):
    path = tmp_path / "ramp.mp4"
    with VideoEncoder(path, 10.0, size=(64, 48), crf=1) as enc:
        for level in LEVELS:
            enc.write(np.full((48, 64, 3), level, np.uint8))
    return path


def test_loop_follows_the_pingpong_schedule(ramp_clip, assets_dir, tmp_path):
    out = tmp_path / "looped.mp4"
    n = loop_video(ramp_clip, out, audio=assets_dir / "speech_3s.wav")
    assert n == 32  # 3.2 s at 10 fps
    info = probe(out)
    assert info.has_audio and abs(info.duration_s - 3.2) < 0.1
    _, frames = read_video(out)
    seen = [int(round(f.image.mean())) for f in frames]
    expected = [LEVELS[k] for k in pingpong_schedule(10, 32)]
    assert len(seen) == 32
    assert max(abs(a - b) for a, b in zip(seen, expected, strict=True)) <= 3


def test_loop_needs_exactly_one_length(ramp_clip, tmp_path):
    with pytest.raises(InputError, match="either"):
        loop_video(ramp_clip, tmp_path / "o.mp4")
    n = loop_video(ramp_clip, tmp_path / "o.mp4", seconds=1.5)
    assert n == 15 and not probe(tmp_path / "o.mp4").has_audio
