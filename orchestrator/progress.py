"""Per-stage progress of one job: frames done out of frames total, for the CLI and Celery.

Progress is a courtesy to whoever watches a job; the video is the job. So publishing it
can never stop or slow a render: ``JobProgress`` swallows (and logs) a publish that raises,
and ``ProgressPublisher`` moves publishing off the render's thread altogether, so a result
store that is down or slow (a Redis restart, a network blip) costs the render nothing. An
update that cannot be stored is kept and retried later; only updates overtaken by a newer
one are dropped (the newest snapshot says everything an older one did).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

STAGES = ("validate", "motion", "lipsync", "restore", "compose")

log = logging.getLogger(__name__)


class JobProgress:
    """Thread-safe counters; ``publish`` receives a snapshot at most every ``interval`` s.

    A ``publish`` that raises is logged (once until it works again) and otherwise ignored:
    the next snapshot goes out on the next update.
    """

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
        self._failing = False

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
        try:
            self.publish(self.snapshot())
        except Exception as exc:  # noqa: BLE001 - progress never fails a render
            if not self._failing:
                self._failing = True
                log.warning("progress update not published (%s: %s); the render goes on",
                            type(exc).__name__, exc,
                            extra={"job": self.job_id, "event": "progress_publish_failed",
                                   "error": type(exc).__name__})
        else:
            if self._failing:
                self._failing = False
                log.info("progress updates published again",
                         extra={"job": self.job_id, "event": "progress_publish_resumed"})


class ProgressPublisher:
    """Publishes snapshots from a thread of its own; call it like ``publish``.

    A call only hands the snapshot over and returns at once. The thread stores the newest
    snapshot it holds; one that fails to store is kept (unless a newer one arrives) and tried
    again after a back-off that grows from ``retry_after`` to ``max_retry_after`` seconds.
    The first failure of an outage is logged as a warning, its end as info with the count of
    failed attempts; nothing in between, however long the outage.

    ``close`` stops the thread, making one last attempt at the newest snapshot within its
    ``timeout``. After ``close`` returns the thread stores nothing more (unless it was stuck
    in a store call longer than ``timeout``, which it says in the log), so whatever the
    caller stores next (a job's final state) is not overwritten by a late progress update.
    """

    def __init__(self, publish: Callable[[dict], None], job_id: str = "-",
                 retry_after: float = 0.5, max_retry_after: float = 2.0):
        self._publish = publish
        self.job_id = job_id
        self.retry_after = retry_after
        self.max_retry_after = max_retry_after
        self._cond = threading.Condition()
        self._pending: dict | None = None
        self._closing = False
        self.published = 0
        self.failed_attempts = 0
        self.outages = 0
        self._thread = threading.Thread(target=self._run, name=f"progress-{job_id}",
                                        daemon=True)
        self._thread.start()

    def __call__(self, snapshot: dict) -> None:
        with self._cond:
            if self._closing:
                return
            self._pending = snapshot
            self._cond.notify()

    def close(self, timeout: float = 5.0) -> bool:
        """Stop after one last attempt at the newest snapshot; False if the thread is still
        inside a store call after ``timeout`` seconds."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("progress publisher still busy %.1f s after the job ended; "
                        "giving up on it", timeout,
                        extra={"job": self.job_id, "event": "progress_publish_stuck"})
            return False
        return True

    def _extra(self, event: str, **more) -> dict:
        return {"job": self.job_id, "event": event, **more}

    def _run(self) -> None:
        delay = 0.0  # > 0 while the store is failing: wait this long before the next try
        failing_since = 0.0
        failed_now = 0
        while True:
            with self._cond:
                # back off while failing (new snapshots do not cut it short; close does)
                until = time.monotonic() + delay
                while not self._closing and (left := until - time.monotonic()) > 0:
                    self._cond.wait(left)
                while self._pending is None and not self._closing:
                    self._cond.wait()
                snapshot, self._pending = self._pending, None
                last_try = self._closing
            if snapshot is None:
                return
            try:
                self._publish(snapshot)
            except Exception as exc:  # noqa: BLE001 - logged; the render never sees it
                self.failed_attempts += 1
                failed_now += 1
                if not delay:
                    self.outages += 1
                    failing_since = time.monotonic()
                    log.warning(
                        "progress update not stored (%s: %s); the render goes on, the newest "
                        "update will be stored when the result store answers again",
                        type(exc).__name__, exc,
                        extra=self._extra("progress_publish_failed",
                                          error=type(exc).__name__))
                if last_try:
                    log.warning("last progress update dropped: the result store still "
                                "fails (%s)", type(exc).__name__,
                                extra=self._extra("progress_publish_dropped",
                                                  failed_attempts=failed_now))
                    return
                with self._cond:
                    if self._pending is None:
                        self._pending = snapshot  # deferred, unless a newer one came
                delay = min(self.max_retry_after, max(self.retry_after, delay * 2))
            else:
                self.published += 1
                if delay:
                    log.info("progress updates stored again after %.1f s (%d failed "
                             "attempts)", time.monotonic() - failing_since, failed_now,
                             extra=self._extra("progress_publish_resumed",
                                               failed_attempts=failed_now))
                delay, failed_now = 0.0, 0
                if last_try:
                    return
