"""The motion-clip cache: a presenter's clip is rendered once and reused by later jobs."""

from __future__ import annotations

import numpy as np

from talkinghead.orchestrator.jobspec import JobSpec
from talkinghead.orchestrator.motion_cache import MotionClipCache, clip_key
from talkinghead.orchestrator.pipeline import render_video
from talkinghead.services.common.frames import FaceGeometry, VideoFrame
from talkinghead.services.motion.options import MotionOptions
from talkinghead.services.motion.template import load_template


def small_clip(n: int = 3) -> list[VideoFrame]:
    rng = np.random.default_rng(0)
    clip = []
    for i in range(n):
        face = FaceGeometry(box=(1.0 + i, 2.0, 30.0, 40.0),
                            landmarks=rng.random((5, 2)).astype(np.float32),
                            crop_transform=np.eye(2, 3, dtype=np.float32), crop_size=256)
        clip.append(VideoFrame(i, rng.integers(0, 255, (8, 10, 3), dtype=np.uint8), face))
    return clip


def test_round_trip_keeps_pixels_and_geometry(tmp_path):
    cache = MotionClipCache(tmp_path)
    clip = small_clip()
    cache.put("k1", clip, {"engine": "test"})
    back = cache.get("k1")
    assert [f.index for f in back] == [0, 1, 2]
    for a, b in zip(clip, back, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        assert a.face.box == b.face.box and b.face.crop_size == 256
        np.testing.assert_array_equal(a.face.landmarks, b.face.landmarks)
        np.testing.assert_array_equal(a.face.crop_transform, b.face.crop_transform)
    assert cache.get("missing") is None


def test_key_depends_on_face_template_options_and_weights():
    talking = load_template("talking")
    base = clip_key(b"face", talking, MotionOptions(), "lite:1")
    assert base == clip_key(b"face", talking, MotionOptions(), "lite:1")
    assert base != clip_key(b"face2", talking, MotionOptions(), "lite:1")
    assert base != clip_key(b"face", talking.resample(30), MotionOptions(), "lite:1")
    assert base != clip_key(b"face", talking, MotionOptions(fps=30), "lite:1")
    assert base != clip_key(b"face", talking, MotionOptions(), "liveportrait:abc")


def test_least_recently_used_entries_are_evicted(tmp_path):
    clip = small_clip()
    size = 3 * 8 * 10 * 3
    cache = MotionClipCache(tmp_path, max_bytes=10**9)
    cache.put("old", clip, {})
    cache.put("new", clip, {})
    cache.max_bytes = size + 4096  # room for one entry
    cache.evict()
    assert cache.get("old") is None and cache.get("new") is not None


def animate_calls(stack) -> int:
    log = next(p for p in stack.processes if p.name == "motion").log_path.read_text()
    return log.count('"msg": "Animate started"')


def test_second_job_of_a_presenter_calls_no_motion_engine(lite_stack, assets_dir, demo_face,
                                                          demo_card, tmp_path):
    cache = MotionClipCache(tmp_path / "cache")

    def spec(name: str) -> JobSpec:
        return JobSpec.model_validate({
            "face": str(demo_face), "audio": str(assets_dir / "speech_3s.wav"),
            "card": demo_card, "output": str(tmp_path / f"{name}.mp4"),
            "options": {"restore": False},
        })

    before = animate_calls(lite_stack)
    first = render_video(spec("first"), lite_stack.targets, cache=cache)
    assert first.cache_hits == {"motion": False}
    assert animate_calls(lite_stack) == before + 1
    second = render_video(spec("second"), lite_stack.targets, cache=cache)
    assert second.cache_hits == {"motion": True}
    assert animate_calls(lite_stack) == before + 1  # no Animate call: the cache served it
    assert second.engines["motion"] == "lite"
    assert (tmp_path / "second.mp4").stat().st_size > 10_000


def test_stage_deadlines_follow_the_audio(lite_stack, assets_dir, demo_face, demo_card, tmp_path,
                                          monkeypatch):
    """A job's streamed stages get a deadline from its audio length; past it the call ends
    with DEADLINE_EXCEEDED (retryable) and nothing is written."""
    import grpc
    import pytest

    from talkinghead.orchestrator.stage_clients import StageFailed
    from talkinghead.orchestrator.time_budget import JobBudget

    monkeypatch.setenv("TALKINGHEAD_STAGE_TIMEOUT_BASE_SECONDS", "10")
    monkeypatch.setenv("TALKINGHEAD_STAGE_SECONDS_PER_AUDIO_SECOND", "2")
    assert JobBudget.for_audio(90).stream_s == 190
    monkeypatch.setenv("TALKINGHEAD_STAGE_TIMEOUT_BASE_SECONDS", "0")
    monkeypatch.setenv("TALKINGHEAD_STAGE_SECONDS_PER_AUDIO_SECOND", "0.01")
    spec = JobSpec.model_validate({
        "face": str(demo_face), "audio": str(assets_dir / "speech_3s.wav"), "card": demo_card,
        "output": str(tmp_path / "late.mp4"), "options": {"restore": False},
    })
    with pytest.raises(StageFailed) as info:
        render_video(spec, lite_stack.targets, cache=MotionClipCache(tmp_path / "cache"))
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert list(tmp_path.glob("*.mp4")) == [] and not list(tmp_path.glob(".*partial*"))
