"""Celery task ``talkinghead.render``: one JobSpec in, one video out (or a readable failure)."""

from __future__ import annotations

import logging
import os

import grpc
from pydantic import ValidationError

from talkinghead.orchestrator.celery_app import app
from talkinghead.orchestrator.jobspec import JobSpec, describe_validation_error
from talkinghead.orchestrator.pipeline import render_video
from talkinghead.orchestrator.progress import JobProgress
from talkinghead.orchestrator.stage_clients import StageFailed, StageTargets, StageUnavailable
from talkinghead.services.common.errors import InputError
from talkinghead.services.common.logs import job_context

log = logging.getLogger(__name__)

DEFAULT_TARGETS = {
    "motion": "127.0.0.1:50051",
    "lipsync": "127.0.0.1:50052",
    "restore": "127.0.0.1:50053",
}


# A model server that is down, restarting or too slow is worth another try; bad input is not.
RETRY_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
MAX_RETRIES = int(os.environ.get("TALKINGHEAD_MAX_RETRIES", "3"))
RETRY_BASE_S = float(os.environ.get("TALKINGHEAD_RETRY_BASE_SECONDS", "10"))
SERVING_TIMEOUT_S = float(os.environ.get("TALKINGHEAD_SERVING_TIMEOUT", "120"))


class JobFailed(Exception):
    """A render that cannot succeed; the message says why (shown to whoever submitted it)."""


def targets_from_env() -> StageTargets:
    """Model server addresses for this worker (TALKINGHEAD_{MOTION,LIPSYNC,RESTORE}_TARGET[S])."""
    restore = os.environ.get("TALKINGHEAD_RESTORE_TARGETS", DEFAULT_TARGETS["restore"])
    return StageTargets(
        motion=os.environ.get("TALKINGHEAD_MOTION_TARGET", DEFAULT_TARGETS["motion"]),
        lipsync=os.environ.get("TALKINGHEAD_LIPSYNC_TARGET", DEFAULT_TARGETS["lipsync"]),
        restore=tuple(t.strip() for t in restore.split(",") if t.strip()),
    )


@app.task(name="talkinghead.render", bind=True)
def render(self, job_spec: dict) -> dict:
    """Render one talking-head video. Progress is published as state PROGRESS."""
    try:
        spec = JobSpec.model_validate(job_spec)
    except ValidationError as exc:
        raise JobFailed(describe_validation_error(exc)) from None
    with job_context(spec.job_id, "orchestrator"):
        log.info("job received: %s -> %s", spec.face, spec.output)

        def publish(snapshot: dict) -> None:
            if self.request.id:
                self.update_state(state="PROGRESS", meta=snapshot)

        try:
            result = render_video(spec, targets_from_env(), JobProgress(spec.job_id, publish),
                                  serving_timeout=SERVING_TIMEOUT_S)
        except InputError as exc:
            log.warning("job refused: %s", exc)
            raise JobFailed(str(exc)) from None
        except (StageFailed, StageUnavailable) as exc:
            transient = isinstance(exc, StageUnavailable) or exc.code in RETRY_CODES
            if transient and self.request.retries < MAX_RETRIES:
                delay = RETRY_BASE_S * 2 ** self.request.retries
                log.warning("job hit a transient failure (%s); retry %d of %d in %.0fs",
                            exc, self.request.retries + 1, MAX_RETRIES, delay)
                raise self.retry(countdown=delay, max_retries=MAX_RETRIES,
                                 exc=JobFailed(str(exc))) from None
            log.error("job failed: %s", exc)
            raise JobFailed(str(exc)) from None
        return result.to_dict()
