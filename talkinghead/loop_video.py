"""``talkinghead loop``: the pipeline's ping-pong loop applied to any video file.

For people who want the looped clip as a file (the pipeline itself never writes it: it
plays the motion clip by a schedule of indices). Forward, backward, forward… with no
repeated frame at the turns, trimmed to the audio (or to ``seconds``), audio muxed in.
"""

from __future__ import annotations

from pathlib import Path

from talkinghead.orchestrator.schedule import output_frame_count, pingpong_schedule
from talkinghead.services.common.audio import SAMPLE_RATE, decode_audio_file
from talkinghead.services.common.errors import InputError
from talkinghead.services.common.video_files import read_video, write_video

MAX_CLIP_FRAMES = 1500  # the clip is held in memory; driving clips are a few seconds


def loop_video(video: Path, out: Path, audio: Path | None = None,
               seconds: float | None = None) -> int:
    """Write the ping-pong loop of ``video`` covering ``audio`` (or ``seconds``); frames written."""
    if (audio is None) == (seconds is None):
        raise InputError("give either an audio file or a duration in seconds")
    if audio is not None:
        seconds = len(decode_audio_file(Path(audio))) / SAMPLE_RATE
    if not seconds or seconds <= 0:
        raise InputError(f"duration must be positive, got {seconds}")
    fps, frames = read_video(Path(video))
    clip = []
    for frame in frames:
        clip.append(frame.image)
        if len(clip) > MAX_CLIP_FRAMES:
            raise InputError(f"video {Path(video).name!r} is longer than {MAX_CLIP_FRAMES} frames")
    if not clip:
        raise InputError(f"video {Path(video).name!r} has no frames")
    schedule = pingpong_schedule(len(clip), output_frame_count(seconds, fps))
    return write_video((clip[k] for k in schedule), Path(out), fps, audio)
