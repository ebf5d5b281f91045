"""The loop: which frame of the motion clip to show at each output frame.

The driving clip (about 5 s) is shorter than the speech. It is played forward, then
backward, then forward again (ping-pong), so the head never jumps. The seed pipeline did
this with ffmpeg (``reverse`` + ``concat`` + ``-stream_loop``), which repeats the turning
frame (a visible pause) and costs a lossy re-encode; here it is a list of indices.
"""

from __future__ import annotations

import math


def pingpong_schedule(clip_frames: int, output_frames: int) -> list[int]:
    """Clip indices 0, 1, …, N-1, N-2, …, 1, 0, 1, … for ``output_frames`` frames.

    Period 2N-2: the last and first frames are shown once per turn, never twice.
    """
    if clip_frames < 1:
        raise ValueError("the motion clip has no frames")
    if output_frames < 0:
        raise ValueError("output_frames must be non-negative")
    if clip_frames == 1:
        return [0] * output_frames
    period = 2 * clip_frames - 2
    schedule = []
    for i in range(output_frames):
        k = i % period
        schedule.append(k if k < clip_frames else period - k)
    return schedule


def output_frame_count(audio_seconds: float, fps: float) -> int:
    """Frames that cover the audio: the video ends within half a frame of the speech."""
    return max(1, int(math.floor(audio_seconds * fps + 0.5)))
