"""A job's inputs are checked once: the audio decoded once, the template loaded once, the face
file read once, whether the job comes through `talkinghead render` or to render_video as a
bare spec (the Celery task's way)."""

from __future__ import annotations

import collections
import sys

import pytest

from talkinghead.orchestrator.jobspec import CheckedInputs, JobSpec, check_inputs
from talkinghead.orchestrator.motion_cache import MotionClipCache
from talkinghead.orchestrator.pipeline import render_video
from talkinghead.services.common import audio as audio_module
from talkinghead.services.motion import template as template_module


@pytest.fixture
def reads(monkeypatch):
    """Calls of decode_audio_file and load_template, from wherever they were imported."""
    calls: collections.Counter = collections.Counter()
    for name, original in (("decode_audio_file", audio_module.decode_audio_file),
                           ("load_template", template_module.load_template)):
        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        for module in list(sys.modules.values()):
            if (getattr(module, "__name__", "").startswith("talkinghead")
                    and getattr(module, name, None) is original):
                monkeypatch.setattr(module, name, counted)
    return calls


def spec_for(assets_dir, demo_face, demo_card, out) -> JobSpec:
    return JobSpec.model_validate({
        "face": str(demo_face), "audio": str(assets_dir / "speech_3s.wav"), "card": demo_card,
        "output": str(out), "options": {"restore": False, "motion_cache": False},
    })


def test_checked_inputs_hold_what_was_read(assets_dir, demo_face, demo_card, tmp_path, reads):
    job = check_inputs(spec_for(assets_dir, demo_face, demo_card, tmp_path / "o.mp4"))
    assert isinstance(job, CheckedInputs)
    assert job.face == demo_face.read_bytes()
    assert abs(job.audio_seconds - 3.2) < 0.05
    assert job.template.name == "talking"
    assert reads == {"decode_audio_file": 1, "load_template": 1}


@pytest.mark.parametrize("way", ["checked", "spec"])
def test_a_job_reads_its_inputs_once(lite_stack, assets_dir, demo_face, demo_card, tmp_path,
                                     reads, way):
    spec = spec_for(assets_dir, demo_face, demo_card, tmp_path / "o.mp4")
    job = check_inputs(spec) if way == "checked" else spec
    result = render_video(job, lite_stack.targets, cache=MotionClipCache(tmp_path / "cache"))
    assert result.frames > 0
    assert reads == {"decode_audio_file": 1, "load_template": 1}


def test_cli_render_reads_its_inputs_once(lite_stack, assets_dir, demo_face, tmp_path, reads,
                                          monkeypatch):
    from talkinghead import cli
    from talkinghead.services.common import logs

    monkeypatch.setattr(logs, "configure_logging", lambda *a, **k: None)  # pytest's logging
    monkeypatch.setenv("TALKINGHEAD_CACHE_DIR", str(tmp_path / "cache"))
    targets = lite_stack.targets
    code = cli.main([
        "render", "--face", str(demo_face), "--audio", str(assets_dir / "speech_3s.wav"),
        "--card", str(assets_dir / "card.json"), "--out", str(tmp_path / "cli.mp4"),
        "--no-restore", "--motion", targets.motion, "--lipsync", targets.lipsync,
        "--restore", ",".join(targets.restore),
    ])
    assert code == 0
    assert (tmp_path / "cli.mp4").stat().st_size > 10_000
    assert reads == {"decode_audio_file": 1, "load_template": 1}
