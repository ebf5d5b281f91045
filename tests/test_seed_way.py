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


# ---- the seed's detectors cost what they cost with trained weights -----------------------

@pytest.fixture(scope="module")
def wav2lip_without_s3fd(tmp_path_factory) -> Path:
    from talkinghead.services.lipsync import wav2lip_weights as ww

    root = tmp_path_factory.mktemp("w2l-no-s3fd")
    ww.write_deterministic_checkpoints(root, "talkinghead-a")
    s3fd = root / ww.FILES["s3fd"]
    kept = root.parent / "s3fd-kept" / ww.FILES["s3fd"]
    kept.parent.mkdir(parents=True, exist_ok=True)
    s3fd.rename(kept)
    return root


def test_neural_lipsync_step_refuses_a_missing_detector(wav2lip_without_s3fd, photo):
    """The seed ran S3FD on every frame: without its file the benchmark must not quietly
    pay Haar's price instead."""
    from bench.seed_way import load_engine, s3fd_every_frame

    engine = load_engine("lipsync", "neural", wav2lip_without_s3fd, "cpu", 1)
    with pytest.raises(RuntimeError, match="s3fd.pth"):
        s3fd_every_frame(engine, [photo], neural=True)


def test_s3fd_postprocessing_over_the_stated_candidate_count(wav2lip_without_s3fd, photo):
    """Deterministic weights pass nearly every anchor; the seed's post-processing is
    charged for S3FD_CANDIDATES of them, exactly, and the cost table shows both."""
    import torch

    from bench.seed_way import S3FD_CANDIDATES, candidate_threshold, s3fd_postprocessing_costs
    from talkinghead.services.lipsync.networks.s3fd import load_s3fd
    from talkinghead.services.lipsync.s3fd_detect import decode_detections, preprocess

    weights = wav2lip_without_s3fd.parent / "s3fd-kept"
    net = load_s3fd(next(weights.rglob("s3fd.pth"))).eval()
    with torch.no_grad():
        maps = net(preprocess(photo, "rgb"))
    every = len(decode_detections(maps)[0])
    assert every > 10 * S3FD_CANDIDATES  # what would have been charged before
    kept = decode_detections(maps, candidate_threshold(maps, S3FD_CANDIDATES))[0]
    assert len(kept) == S3FD_CANDIDATES

    costs = s3fd_postprocessing_costs(weights, photo, repeats=1)
    assert [n for n, _ in costs] == [S3FD_CANDIDATES, 10 * S3FD_CANDIDATES, every]
    assert all(seconds > 0 for _, seconds in costs)
