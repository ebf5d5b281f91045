"""The seed's way (bench/seed_way.py) on the lite engines: the harness, not a speed test."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.seed_way import run_seed_way
from talkinghead.compositor import probe
from talkinghead.services.common.audio import ffmpeg_exe

FPS = 25.0


@pytest.fixture(scope="module")
def short_speech(tmp_path_factory, demo_face) -> Path:
    """About one second of the demo speech."""
    out = tmp_path_factory.mktemp("seed-audio") / "speech_1s.wav"
    speech = demo_face.parent / "speech.wav"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(speech),
                    "-t", "1.04", str(out)], check=True)
    return out


@pytest.mark.parametrize("restore", [True, False], ids=["restore", "no-restore"])
def test_seed_way_lite_renders_the_job_step_by_step(tmp_path, demo_face, short_speech, restore):
    lines: list[str] = []
    run = run_seed_way(demo_face, short_speech, "talking", None, tmp_path / "work",
                       restore=restore, engine="lite", log=lines.append)

    steps = ["motion", "loop", "lipsync", *(["restore"] if restore else []), "compose"]
    assert list(run.seconds) == [*steps, "total"]
    assert all(run.seconds[k] > 0 for k in run.seconds)
    assert run.seconds["total"] >= sum(run.seconds[s] for s in steps)
    assert [line.split()[2] for line in lines] == [*steps, "total"]
    # what does not grow with the audio: the whole motion step, each other step's start-up
    assert run.fixed_seconds["motion"] == run.seconds["motion"]
    assert all(0 < run.fixed_seconds[s] < run.seconds[s] for s in steps if s != "motion")

    info = probe(run.output)
    assert (info.width, info.height) == (1920, 1080)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    speech = probe(short_speech).duration_s
    assert abs(info.duration_s - speech) <= 2 / FPS
    assert (tmp_path / "work" / "restored.mp4").is_file() == restore


def test_a_failing_step_says_which_and_why(tmp_path, short_speech):
    with pytest.raises(RuntimeError, match="seed way: motion failed"):
        run_seed_way(tmp_path / "missing.jpg", short_speech, "talking", None, tmp_path,
                     engine="lite", log=lambda line: None)
