"""Structured logs: one JSON object per line, always saying which job and stage.

The job id travels with every gRPC call as metadata (``x-talkinghead-job``) and with every
Celery task; ``job_context`` puts it on every log record made while the job is handled.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Iterator

JOB_METADATA_KEY = "x-talkinghead-job"

_job: contextvars.ContextVar[str] = contextvars.ContextVar("talkinghead_job", default="-")
_stage: contextvars.ContextVar[str] = contextvars.ContextVar("talkinghead_stage", default="-")


@contextlib.contextmanager
def job_context(job_id: str | None = None, stage: str | None = None) -> Iterator[None]:
    tokens = []
    if job_id is not None:
        tokens.append((_job, _job.set(job_id)))
    if stage is not None:
        tokens.append((_stage, _stage.set(stage)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current_job() -> str:
    return _job.get()


class JsonFormatter(logging.Formatter):
    """Log records as JSON lines with time, level, component, job, stage and extras."""

    _standard = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def __init__(self, component: str):
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        job = getattr(record, "job", None) or _job.get()
        data = getattr(record, "data", None)
        if job == "-" and isinstance(data, dict) and "id" in data:
            job = str(data["id"])  # Celery's own task lines carry the task id (= job id)
        payload = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": self.component,
            "job": job,
            "stage": getattr(record, "stage", None) or _stage.get(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._standard and key not in payload and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class PlainFormatter(logging.Formatter):
    """Human-readable, still naming job and stage (for interactive use)."""

    def format(self, record: logging.LogRecord) -> str:
        job = getattr(record, "job", None) or _job.get()
        stage = getattr(record, "stage", None) or _stage.get()
        base = f"{time.strftime('%H:%M:%S')} {record.levelname:<7} [{stage}] [job {job}] "
        return base + record.getMessage()


def configure_logging(component: str, level: str | None = None, fmt: str | None = None) -> None:
    """Set up the root logger; TALKINGHEAD_LOG_FORMAT=json|plain, TALKINGHEAD_LOG_LEVEL."""
    level = level or os.environ.get("TALKINGHEAD_LOG_LEVEL", "INFO")
    fmt = fmt or os.environ.get("TALKINGHEAD_LOG_FORMAT", "json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(component) if fmt == "json" else PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
