"""Per-stage progress of one job: frames done out of frames total, for the CLI and Celery."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

STAGES = ("validate", "motion", "lipsync", "restore", "compose")


class JobProgress:
    """Thread-safe counters; ``publish`` receives a snapshot at most every ``interval`` s."""

    def __init__(
        self,
        job_id: str,
        publish: Callable[[dict], None] | None = None,
        interval: float = 0.5,
    ):
        self.job_id = job_id
        self.publish = publish
        self.interval = interval
        self._lock = threading.Lock()
        self._done = {s: 0 for s in STAGES}
        self._total = {s: 0 for s in STAGES}
        self._stage = STAGES[0]
        self._last = 0.0

    def start(self, stage: str, total: int) -> None:
        with self._lock:
            self._stage, self._total[stage] = stage, total
        self._maybe_publish(force=True)

    def set_total(self, stage: str, total: int) -> None:
        with self._lock:
            self._total[stage] = total

    def advance(self, stage: str, n: int = 1) -> None:
        with self._lock:
            self._done[stage] += n
            # The furthest stage with work done is "the" stage a person wants to see.
            if STAGES.index(stage) > STAGES.index(self._stage):
                self._stage = stage
        self._maybe_publish()

    def finish(self, stage: str) -> None:
        with self._lock:
            self._done[stage] = self._total[stage]
        self._maybe_publish(force=True)

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "job_id": self.job_id,
                "stage": self._stage,
                "stages": {
                    s: {"done": self._done[s], "total": self._total[s]} for s in STAGES
                },
            }

    def _maybe_publish(self, force: bool = False) -> None:
        if self.publish is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        self.publish(self.snapshot())
