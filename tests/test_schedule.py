from __future__ import annotations

import pytest

from talkinghead.orchestrator.schedule import output_frame_count, pingpong_schedule


def test_pingpong_turns_without_repeating_the_end_frames():
    assert pingpong_schedule(4, 12) == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1]


def test_pingpong_steps_are_always_one_frame():
    s = pingpong_schedule(100, 2500)
    assert len(s) == 2500
    assert all(abs(a - b) == 1 for a, b in zip(s, s[1:], strict=False))
    assert min(s) == 0 and max(s) == 99


def test_single_frame_clip_and_errors():
    assert pingpong_schedule(1, 3) == [0, 0, 0]
    with pytest.raises(ValueError):
        pingpong_schedule(0, 3)


@pytest.mark.parametrize(("seconds", "fps", "frames"), [(3.2, 25, 80), (10.79, 25, 270), (0.01, 25, 1)])
def test_output_covers_audio_within_half_a_frame(seconds, fps, frames):
    assert output_frame_count(seconds, fps) == frames
    assert abs(frames / fps - seconds) <= 0.5 / fps or frames == 1
