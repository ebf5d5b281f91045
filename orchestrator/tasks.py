"""Celery task ``talkinghead.render``: one JobSpec in, one video out (or a readable failure)."""

from __future__ import annotations

import logging
import os
import random
import time

import grpc
from celery.app.backends import by_url
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from pydantic import ValidationError

from talkinghead.orchestrator.celery_app import app
from talkinghead.orchestrator.jobspec import JobSpec, describe_validation_error
from talkinghead.orchestrator.pipeline import render_video
from talkinghead.orchestrator.progress import JobProgress, ProgressPublisher
from talkinghead.orchestrator.stage_clients import StageFailed, StageTargets, StageUnavailable
from talkinghead.services.common.errors import InputError
from talkinghead.services.common.logs import job_context
from talkinghead.services.stages import stages

log = logging.getLogger(__name__)


# A model server that is down, restarting, too slow or full is worth another try; bad input
# is not (a message over a size limit is RESOURCE_EXHAUSTED too, without StageFailed.busy).
# Restore replicas are retried chunk by chunk in restore_fanout.py first.
RETRY_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
MAX_RETRIES = int(os.environ.get("TALKINGHEAD_MAX_RETRIES", "3"))
RETRY_BASE_S = float(os.environ.get("TALKINGHEAD_RETRY_BASE_SECONDS", "10"))
SERVING_TIMEOUT_S = float(os.environ.get("TALKINGHEAD_SERVING_TIMEOUT", "120"))
# How long a finished job waits for its last progress update before its result is stored.
PROGRESS_CLOSE_S = 5.0


class JobFailed(Exception):
    """A render that cannot succeed; the message says why (shown to whoever submitted it)."""


def targets_from_env() -> StageTargets:
    """Model server addresses for this worker: each stage's variable (the stage registry's
    ``target_env``: TALKINGHEAD_MOTION_TARGET, TALKINGHEAD_LIPSYNC_TARGET,
    TALKINGHEAD_RESTORE_TARGETS, comma-separated), else the stage's default address."""
    found: dict[str, str | tuple[str, ...]] = {}
    for stage in stages():
        value = os.environ.get(stage.target_env, stage.default_target)
        if stage.replicated:
            found[stage.name] = tuple(t.strip() for t in value.split(",") if t.strip())
        else:
            found[stage.name] = value.strip()
    return StageTargets(**found)


_progress_backend: tuple[int, object] | None = None


def progress_backend(app):
    """This process's result backend for progress updates: one attempt per update, a
    short socket timeout, none of the retries the job's final result gets.

    A progress update that fails is the publisher's to retry later (progress.py); were it
    to retry in place (Celery's Redis backend retries a write 20 times, about 20 s), a late
    update could land after the job's final state and hide it.
    """
    global _progress_backend
    if _progress_backend is None or _progress_backend[0] != os.getpid():
        cls, url = by_url(app.conf.result_backend, app.loader)
        backend = cls(app=app, url=url)
        backend.always_retry = False
        if isinstance(getattr(backend, "retry_policy", None), dict):
            backend.retry_policy = {**backend.retry_policy, "max_retries": 0}
        params = getattr(backend, "connparams", None)
        if isinstance(params, dict):  # Redis: fail fast, no reconnect loop of its own
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            params.update(socket_timeout=5.0, retry=Retry(NoBackoff(), 0))
            if "socket_connect_timeout" in params:  # (a unix socket has none)
                params["socket_connect_timeout"] = 2.0
        _progress_backend = (os.getpid(), backend)
    return _progress_backend[1]


def progress_store(task) -> ProgressPublisher | None:
    """A publisher storing the running task's PROGRESS state from a thread of its own."""
    request = task.request  # this task's, captured in its own thread
    if not request.id:
        return None
    backend = progress_backend(task.app)

    def store(snapshot: dict) -> None:
        backend.store_result(request.id, snapshot, "PROGRESS", request=request)

    return ProgressPublisher(store, request.id)


def retry_delay(retries: int) -> float:
    """Exponential backoff with jitter, so jobs turned away together do not return together."""
    return RETRY_BASE_S * 2**retries * random.uniform(0.5, 1.5)


@app.task(name="talkinghead.render", bind=True,
          Request="talkinghead.orchestrator.job_request:JobRequest")
def render(self, job_spec: dict) -> dict:
    """Render one talking-head video. Progress is published as state PROGRESS."""
    started = time.monotonic()
    try:
        spec = JobSpec.model_validate(job_spec)
    except ValidationError as exc:
        raise JobFailed(describe_validation_error(exc)) from None
    with job_context(spec.job_id, "orchestrator"):
        log.info("job received: %s -> %s (attempt %d)", spec.face, spec.output,
                 self.request.retries + 1)

        # Progress goes out from a thread of its own: a result store that is down or slow
        # never stops nor slows the render (progress.py).
        publisher = progress_store(self)
        try:
            result = render_video(spec, targets_from_env(),
                                  JobProgress(spec.job_id, publisher),
                                  serving_timeout=SERVING_TIMEOUT_S)
        except SoftTimeLimitExceeded:
            # Raised by our soft time limit, or by `talkinghead cancel` (a revoke that
            # signals SIGUSR1). Either way the streams are cancelled and the partial output
            # deleted by now (pipeline.py).
            _, soft = self.request.timelimit or (None, None)
            elapsed = time.monotonic() - started
            if soft and elapsed >= float(soft) - 1.0:
                log.error("job stopped at its soft time limit (%.0f s)", float(soft))
                raise JobFailed(
                    f"job exceeded its time limit of {float(soft):.0f} s (set from the audio "
                    f"length; see TALKINGHEAD_JOB_SECONDS_PER_AUDIO_SECOND)") from None
            log.warning("job cancelled after %.1f s; nothing written", elapsed)
            # The worker stored REVOKED when the revoke arrived, while this process could
            # still be storing a progress update: stop the publisher, then store REVOKED
            # again, so that no late PROGRESS is left as the job's last state.
            if publisher is not None:
                publisher.close(PROGRESS_CLOSE_S)
            try:
                self.backend.mark_as_revoked(self.request.id, reason="cancelled",
                                             request=self.request)
            except Exception as exc:  # noqa: BLE001 - the worker's own REVOKED may stand
                log.warning("cancelled job's state not stored again (%s: %s)",
                            type(exc).__name__, exc)
            raise Ignore() from None
        except InputError as exc:
            log.warning("job refused: %s", exc)
            raise JobFailed(str(exc)) from None
        except (StageFailed, StageUnavailable) as exc:
            transient = isinstance(exc, StageUnavailable) or exc.code in RETRY_CODES or (
                exc.busy)
            if transient and self.request.retries < MAX_RETRIES:
                delay = retry_delay(self.request.retries)
                log.warning("job hit a transient failure (%s); retry %d of %d in %.1fs",
                            exc, self.request.retries + 1, MAX_RETRIES, delay)
                raise self.retry(countdown=delay, max_retries=MAX_RETRIES,
                                 exc=JobFailed(str(exc))) from None
            log.error("job failed: %s", exc)
            raise JobFailed(str(exc)) from None
        finally:
            # Before the final state is stored: no progress update may land after it.
            if publisher is not None:
                publisher.close(PROGRESS_CLOSE_S)
        return result.to_dict()


def cancel(job_id: str) -> None:
    """Stop a job: a queued one never starts, a running one ends its streams and cleans up.

    SIGUSR1 raises SoftTimeLimitExceeded inside the task (prefork pool), which unwinds
    through the pipeline's clean-up instead of killing the process.
    """
    app.control.revoke(job_id, terminate=True, signal="SIGUSR1")
