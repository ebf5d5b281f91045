"""The worker-side request of a render: its Celery time limits follow its audio length.

Celery applies time limits in the worker's main process, before the task runs. A content
system sends ``talkinghead.render`` with a job spec and no limits, so the limits are worked
out here, where the message arrives: the audio file's stated duration (read from its header,
not decoded) gives the job's budget (time_budget.py). Limits a submitter did set win.
The limits travel on to the task (``request.timelimit``), so it can tell its own soft limit
from a revoke.
"""

from __future__ import annotations

import logging
from pathlib import Path

from celery.worker.request import Request

from talkinghead.orchestrator.time_budget import JobBudget
from talkinghead.services.common.audio import probe_duration_seconds

log = logging.getLogger(__name__)


def audio_seconds_of(args: tuple | list, kwargs: dict) -> float | None:
    """The audio length of the job spec in a render message, if its file states one."""
    spec = args[0] if args else kwargs.get("job_spec")
    audio = spec.get("audio") if isinstance(spec, dict) else None
    if not isinstance(audio, str) or not Path(audio).is_file():
        return None  # the task itself will refuse the spec, with the reason
    return probe_duration_seconds(Path(audio))


class JobRequest(Request):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        given = self._request_dict.get("timelimit") or (None, None)
        if any(limit is not None for limit in given):
            return
        try:
            task_args, task_kwargs, _ = self._payload
            seconds = audio_seconds_of(task_args, task_kwargs)
        except Exception:  # noqa: BLE001 - a malformed message is the task's to refuse
            seconds = None
        budget = JobBudget.for_audio(seconds)
        self.time_limits = (budget.hard_s, budget.soft_s)
        self._request_dict["timelimit"] = self.time_limits
        log.info("job %s: %s s of audio, time limits soft %.0f s, hard %.0f s", self.id,
                 "unknown" if seconds is None else f"{seconds:.1f}", budget.soft_s, budget.hard_s)
