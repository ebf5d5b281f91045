"""One render, stage by stage: the order a frame travels in.

  1. check the inputs (files decode, audio within limits, template known, output writable),
     once per job: what was read (face, audio, template) is used from then on
  2. motion:  photo + template → motion clip (about 5 s, with face geometry per frame),
              or the same clip from the cache when this presenter was rendered before
  3. loop:    ping-pong schedule of clip frames covering the audio
  4. lipsync: scheduled frames + audio → mouth in sync       ┐ streamed: the stages
  5. restore: fanned out over every replica, order kept       │ overlap, frames never
  6. compose: news frame per frame → H.264 + AAC, atomic      ┘ wait for a whole stage
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from talkinghead.compositor import (
    NewsFrameRenderer,
    NewsLayout,
    NewsScene,
    VideoEncoder,
    remove_abandoned_temp_files,
)
from talkinghead.orchestrator.jobspec import CheckedInputs, JobSpec, check_inputs
from talkinghead.orchestrator.motion_cache import MotionClipCache, clip_key
from talkinghead.orchestrator.progress import JobProgress
from talkinghead.orchestrator.restore_fanout import RestoreFanout
from talkinghead.orchestrator.schedule import output_frame_count, pingpong_schedule
from talkinghead.orchestrator.stage_clients import (
    LipSyncClient,
    MotionClient,
    StageTargets,
    open_channel,
    wait_for_any_serving,
    wait_for_serving,
)
from talkinghead.orchestrator.time_budget import JobBudget
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.common.logs import job_context
from talkinghead.services.motion.options import MotionOptions, MotionReport

log = logging.getLogger(__name__)


@dataclass
class RenderResult:
    job_id: str
    output: str
    duration_s: float
    frames: int
    fps: float
    clip_frames: int
    stage_seconds: dict[str, float] = field(default_factory=dict)
    engines: dict[str, str] = field(default_factory=dict)
    restore_chunks: dict[str, int] = field(default_factory=dict)
    # restore replicas out of rotation at some point of the job, with the reason
    restore_replicas_out: dict[str, str] = field(default_factory=dict)
    cache_hits: dict[str, bool] = field(default_factory=dict)
    missing_glyphs: list[str] = field(default_factory=list)
    """Card characters no available font has ('U+E000', ...), drawn as U+FFFD instead."""
    motion: dict = field(default_factory=dict)
    """The driving options the clip was made with, and the motion engine's report on them
    (expression-friendly's m, lip normalised or not, options not applied and why)."""

    def to_dict(self) -> dict:
        return asdict(self)


def _counted(frames: Iterable[VideoFrame], progress: JobProgress, stage: str,
             marks: dict[str, float], t0: float) -> Iterator[VideoFrame]:
    for frame in frames:
        progress.advance(stage)
        marks[stage] = time.perf_counter() - t0
        yield frame


def wait_for_stages(targets: StageTargets, timeout: float, restore: bool = True
                    ) -> dict[str, str]:
    """Wait until motion, lipsync and at least ONE restore replica are SERVING.

    A job needs one restore replica, not all: the ones that are down are left out of the
    job's rotation (and health-checked back in by the fan-out). Returns the restore
    replicas that are not SERVING, with their status, and logs them.
    """
    for stage, target in (("motion", targets.motion), ("lipsync", targets.lipsync)):
        channel = open_channel(target)
        try:
            wait_for_serving(channel, stage, target, timeout)
        finally:
            channel.close()
    if not restore or not targets.restore:
        return {}
    status = wait_for_any_serving("restore", targets.restore, timeout)
    out = {t: s for t, s in status.items() if s != "SERVING"}
    if out:
        log.warning("restore: %d of %d replicas SERVING; out of rotation for now: %s",
                    len(status) - len(out), len(status),
                    "; ".join(f"{t} ({s})" for t, s in out.items()))
    return out


def motion_clip(
    job: CheckedInputs, targets: StageTargets, progress: JobProgress,
    cache: MotionClipCache | None, timeout: float | None = None,
    busy_deadline: float | None = None,
) -> tuple[list[VideoFrame], str, bool, dict]:
    """(clip, engine name, cache hit, motion report): the presenter's motion clip for this
    job, and what the motion engine did with the driving options (MotionReport.to_dict,
    kept with a cached clip)."""
    spec, template, face_bytes = job.spec, job.template, job.face
    options = job.motion  # expression_multiplier resolved ("auto": from the speech)
    # a template given as a file travels with the request; a name is the server's own
    template_arg: str | bytes = spec.template
    if Path(spec.template).suffix in (".npz", ".pkl") and Path(spec.template).is_file():
        template_arg = template_as_npz(template)
    motion = MotionClient(targets.motion, spec.job_id)
    try:
        key = None
        if cache is not None:
            engine = motion.engine_info()
            key = clip_key(face_bytes, template, options, f"{engine.name}:{engine.fingerprint}")
            clip = cache.get(key)
            if clip is not None:
                report = cache.info(key).get("report", {})
                return with_clip_identity(clip, key), engine.name, True, report
        progress.start("motion", 0)
        clip, header = motion.animate(
            face_bytes, template_arg, options, timeout=timeout,
            on_frame=lambda done, total: (
                progress.set_total("motion", total), progress.advance("motion", 0)
            ),
            busy_deadline=busy_deadline,
        )
    finally:
        motion.close()
    report = MotionReport.from_proto(header.report).to_dict()
    if cache is not None and key is not None:
        cache.put(key, clip, {"engine": header.engine.name, "template": template.name,
                              "fingerprint": header.engine.fingerprint, "report": report})
    if key is None:  # no cache: the same key all the same, from the engine that answered
        key = clip_key(face_bytes, template, options,
                       f"{header.engine.name}:{header.engine.fingerprint}")
    return with_clip_identity(clip, key), header.engine.name, False, report


def motion_summary(options: MotionOptions, report: dict) -> dict:
    """The task result's ``motion``: the options that shaped the clip, and the engine's report."""
    return {
        "animation_region": options.animation_region,
        "driving_option": options.driving_option,
        "driving_multiplier": options.driving_multiplier,
        "normalize_lip": options.normalize_lip,
        "expression_multiplier": options.expression_multiplier,
        **report,
    }


def with_clip_identity(clip: list[VideoFrame], key: str) -> list[VideoFrame]:
    """The clip with each face geometry carrying (clip key, frame index): the motion frame
    every output frame is made from, which restore keys its paste-back masks on."""
    return [VideoFrame(f.index, f.image, None if f.face is None else
                       replace(f.face, clip_key=key, clip_frame=i))
            for i, f in enumerate(clip)]


def template_as_npz(template) -> bytes:
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, scale=template.scale, R=template.R, exp=template.exp, t=template.t,
             fps=np.asarray(template.fps))
    return buffer.getvalue()


def render_video(
    job: CheckedInputs | JobSpec,
    targets: StageTargets,
    progress: JobProgress | None = None,
    serving_timeout: float = 120.0,
    cache: MotionClipCache | None = None,
) -> RenderResult:
    """Render ``job`` through the model servers at ``targets``; returns what was made.

    ``job`` is what ``check_inputs`` returned (checked by the caller, not again here), or a
    bare ``JobSpec``, checked here as the job's first stage.
    """
    spec = job.spec if isinstance(job, CheckedInputs) else job
    progress = progress or JobProgress(spec.job_id)
    opts = spec.options
    if cache is None and opts.motion_cache:
        cache = MotionClipCache()
    if not opts.motion_cache:
        cache = None
    seconds: dict[str, float] = {}
    with job_context(spec.job_id, "orchestrator"):
        t0 = time.perf_counter()
        started = time.monotonic()
        progress.start("validate", 1)
        if not isinstance(job, CheckedInputs):
            job = check_inputs(job)
        audio, audio_seconds = job.audio, job.audio_seconds
        n_out = output_frame_count(audio_seconds, opts.fps)
        progress.finish("validate")
        for path in remove_abandoned_temp_files(spec.output):
            log.info("removed %s, left by an earlier attempt that was killed", path.name)
        restore_out = wait_for_stages(targets, serving_timeout, restore=opts.restore)
        seconds["validate"] = time.perf_counter() - t0

        # 2. motion clip: from the cache, or rendered once and stored
        t = time.perf_counter()
        deadlines = JobBudget.for_audio(audio_seconds)
        # A busy server (RESOURCE_EXHAUSTED) is waited for until shortly before the job's
        # soft time limit, never counted against a retry budget.
        busy_deadline = started + deadlines.soft_s - min(60.0, 0.1 * deadlines.soft_s)
        clip, engine_name, cache_hit, motion_report = motion_clip(job, targets, progress, cache,
                                                   deadlines.motion_s, busy_deadline)
        progress.set_total("motion", len(clip))
        progress.finish("motion")
        seconds["motion"] = time.perf_counter() - t
        log.info("motion clip: %d frames in %.2fs (cache %s)", len(clip), seconds["motion"],
                 "hit" if cache_hit else "miss")

        # 3. the loop, as indices
        schedule = pingpong_schedule(len(clip), n_out)
        scheduled = (
            VideoFrame(index=i, image=clip[k].image, face=clip[k].face)
            for i, k in enumerate(schedule)
        )

        # 4-6. streamed stages
        for stage in ("lipsync", "restore", "compose"):
            progress.set_total(stage, n_out if (stage != "restore" or opts.restore) else 0)
        t = time.perf_counter()
        marks: dict[str, float] = {}
        lipsync = LipSyncClient(targets.lipsync, spec.job_id)
        fanout = None
        try:
            frames: Iterable[VideoFrame] = _counted(
                lipsync.sync(scheduled, audio, opts.fps, timeout=deadlines.stream_s,
                             busy_deadline=busy_deadline),
                progress, "lipsync", marks, t,
            )
            if opts.restore:
                fanout = RestoreFanout(
                    targets.restore, spec.job_id, opts.restore_chunk_frames, opts.restore_weight,
                    chunk_timeout=deadlines.stream_s, deadline=busy_deadline,
                    all_down_seconds=serving_timeout, out_of_rotation=restore_out,
                )
                frames = _counted(fanout.restore(frames), progress, "restore", marks, t)
            scene = NewsScene(
                title=spec.card.title,
                company=spec.card.company,
                location=spec.card.location,
                skills=list(spec.card.skills),
                channel_name=spec.card.channel_name or "TALKINGHEAD NEWS",
                logo_path=Path(spec.logo) if spec.logo else None,
                ticker_text=spec.card.ticker,
            )
            renderer = NewsFrameRenderer(scene, NewsLayout(), opts.fps)
            if clip[0].face is not None:
                renderer.lock_crop(clip[0].image.shape, clip[0].face.box)
            written = 0
            with VideoEncoder(
                Path(spec.output), opts.fps, audio_path=Path(spec.audio),
                crf=opts.crf, preset=opts.preset,
            ) as encoder:
                for frame in frames:
                    if frame.index != written:
                        raise RuntimeError(f"frame order broken: got {frame.index}, want {written}")
                    encoder.write(renderer.render(frame.image, frame.index))
                    written += 1
                    progress.advance("compose")
                    marks["compose"] = time.perf_counter() - t
                if written != n_out:
                    raise RuntimeError(f"pipeline produced {written} of {n_out} frames")
        except BaseException:
            # Stopped (failure, time limit, revoke): end our streams now so every server
            # frees its slot at once, not when its deadline passes.
            lipsync.cancel()
            if fanout is not None:
                fanout.cancel()
            raise
        finally:
            lipsync.close()
        progress.finish("compose")
        seconds.update({f"{k}_done_at": round(v, 3) for k, v in marks.items()})
        seconds["stream"] = time.perf_counter() - t
        seconds["total"] = time.perf_counter() - t0
        result = RenderResult(
            job_id=spec.job_id,
            output=str(spec.output),
            duration_s=n_out / opts.fps,
            frames=n_out,
            fps=opts.fps,
            clip_frames=len(clip),
            stage_seconds={k: round(v, 3) for k, v in seconds.items()},
            engines={
                "motion": engine_name,
                "lipsync": lipsync.engine.name if lipsync.engine else "",
                "restore": fanout.engine_name if fanout else "",
            },
            restore_chunks=dict(fanout.chunks_per_target) if fanout else {},
            restore_replicas_out=fanout.ever_out() if fanout else {},
            cache_hits={"motion": cache_hit},
            missing_glyphs=list(renderer.missing_glyphs),
            motion={**motion_summary(job.motion, motion_report), **job.expression_summary()},
        )
        log.info("rendered %s: %d frames in %.2fs", spec.output, n_out, seconds["total"])
        return result
