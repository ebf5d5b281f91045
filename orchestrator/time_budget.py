"""How long one job may take, from its audio length.

A job's cost grows with its audio (every output frame goes through lipsync, restore and
the compositor) plus a fixed part (the motion clip, paid once per presenter, and start-up).
The same budget gives:

* the Celery **soft** time limit: past it the task stops its streams, deletes its partial
  output and fails with a reason;
* the Celery **hard** limit, a little later: the pool kills the process if the soft limit
  could not stop it;
* the **gRPC deadlines** of the stage calls, inside the soft limit, so a stuck server ends
  its call with DEADLINE_EXCEEDED (which the task retries) before the job runs out of time.

Defaults are generous for neural engines on a CPU; set them from your BENCHMARKS figures.
Every value is capped by ``TALKINGHEAD_MAX_JOB_SECONDS``, which also sets the Redis
visibility timeout (see celery_app.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def _env(name: str, default: float) -> float:
    return float(os.environ.get(name, str(default)))


def max_job_seconds() -> float:
    """The longest any job may run (default 6 h)."""
    return _env("TALKINGHEAD_MAX_JOB_SECONDS", 6 * 3600)


@dataclass(frozen=True)
class JobBudget:
    soft_s: float  # Celery soft time limit of the task
    hard_s: float  # Celery hard time limit (process killed)
    motion_s: float  # gRPC deadline of the motion clip
    stream_s: float  # gRPC deadline of each streamed stage call (lipsync, restore chunk)

    @classmethod
    def for_audio(cls, audio_seconds: float | None) -> JobBudget:
        """The budget of a job with this much audio (None: unknown, the maximum)."""
        cap = max_job_seconds()
        if audio_seconds is None:
            soft = cap
        else:
            soft = min(cap, _env("TALKINGHEAD_JOB_SECONDS_BASE", 1800)
                       + _env("TALKINGHEAD_JOB_SECONDS_PER_AUDIO_SECOND", 120) * audio_seconds)
        stream = _env("TALKINGHEAD_STAGE_TIMEOUT_BASE_SECONDS", 300) + _env(
            "TALKINGHEAD_STAGE_SECONDS_PER_AUDIO_SECOND", 120) * (audio_seconds or 0.0)
        return cls(
            soft_s=soft,
            hard_s=soft + _env("TALKINGHEAD_JOB_HARD_LIMIT_GRACE_SECONDS", 120),
            motion_s=min(soft, _env("TALKINGHEAD_MOTION_TIMEOUT_SECONDS", 1500)),
            stream_s=min(soft, stream),
        )
