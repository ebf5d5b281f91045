"""Progress publishing never stops nor slows a render (issue #14 item 2), without Redis:
a store that raises or hangs, then recovers. (The same with a real Redis killed and
restarted mid-job is tests/test_redis_outage.py.)"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from talkinghead.orchestrator.progress import JobProgress, ProgressPublisher


class FlakyStore:
    """A store that fails (raises, after ``delay`` s) while ``down`` is set."""

    def __init__(self, delay: float = 0.0):
        self.down = threading.Event()
        self.delay = delay
        self.stored: list[dict] = []
        self.attempts: list[float] = []

    def __call__(self, snapshot: dict) -> None:
        self.attempts.append(time.monotonic())
        time.sleep(self.delay)
        if self.down.is_set():
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.stored.append(snapshot)


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def events(caplog) -> list[str]:
    return [getattr(r, "event", "") for r in caplog.records if getattr(r, "event", "")]


def test_job_progress_survives_a_publish_that_raises(caplog):
    """A synchronous publish that raises (the CLI's, or any other) is logged once and the
    counters go on; the next update after it works again is published."""
    store = FlakyStore()
    store.down.set()
    progress = JobProgress("job-1", store, interval=0.0)
    with caplog.at_level(logging.INFO, "talkinghead.orchestrator.progress"):
        progress.start("compose", 10)
        for _ in range(5):
            progress.advance("compose")
        store.down.clear()
        progress.advance("compose")
        progress.finish("compose")
    assert len(store.attempts) == 8
    assert [s["stages"]["compose"]["done"] for s in store.stored] == [6, 10]
    assert events(caplog) == ["progress_publish_failed", "progress_publish_resumed"]
    failed = next(r for r in caplog.records if getattr(r, "event", "") == "progress_publish_failed")
    assert failed.job == "job-1" and failed.error == "ConnectionError"


def test_publisher_never_makes_the_render_wait():
    """Each store call takes 0.5 s and fails: handing 200 updates over takes no time."""
    store = FlakyStore(delay=0.5)
    store.down.set()
    publisher = ProgressPublisher(store, "job-2", retry_after=0.05, max_retry_after=0.1)
    progress = JobProgress("job-2", publisher, interval=0.0)
    started = time.monotonic()
    for _ in range(200):
        progress.advance("compose")
    assert time.monotonic() - started < 0.5
    publisher.close(timeout=2.0)


def test_publisher_defers_the_newest_update_through_an_outage(caplog):
    """While the store is down the newest snapshot is kept and retried with back-off (not
    once per update); when it is back, that newest snapshot is stored; one warning for the
    outage, one line when it ends."""
    store = FlakyStore()
    publisher = ProgressPublisher(store, "job-3", retry_after=0.1, max_retry_after=0.2)
    with caplog.at_level(logging.INFO, "talkinghead.orchestrator.progress"):
        publisher({"n": 0})
        wait_for(lambda: store.stored)
        store.down.set()
        for n in range(1, 101):  # 100 updates over 1 s of outage
            publisher({"n": n})
            time.sleep(0.01)
        attempts_while_down = len(store.attempts) - 1
        store.down.clear()
        wait_for(lambda: store.stored[-1] == {"n": 100})
        assert publisher.close(timeout=2.0)
    # backed off: 0.1 s then 0.2 s between tries, not 100 tries
    assert 2 <= attempts_while_down <= 10, attempts_while_down
    assert [s["n"] for s in store.stored] == [0, 100]
    assert events(caplog) == ["progress_publish_failed", "progress_publish_resumed"]
    assert publisher.outages == 1 and publisher.failed_attempts >= 2


def test_close_stores_the_last_update_then_nothing_more():
    """``close`` stores the newest snapshot before it returns; nothing is stored after
    (the job's final state, stored next, is never overwritten by progress)."""
    store = FlakyStore(delay=0.05)
    publisher = ProgressPublisher(store, "job-4")
    for n in range(50):
        publisher({"n": n})
    assert publisher.close(timeout=2.0)
    assert store.stored[-1] == {"n": 49}
    count = len(store.attempts)
    publisher({"n": 50})
    time.sleep(0.2)
    assert len(store.attempts) == count


def test_close_while_the_store_is_down_gives_up_at_once(caplog):
    """The job ends during an outage: one last try (not a back-off wait), then the update
    is dropped with a log line; close returns promptly."""
    store = FlakyStore()
    store.down.set()
    publisher = ProgressPublisher(store, "job-5", retry_after=5.0, max_retry_after=5.0)
    with caplog.at_level(logging.INFO, "talkinghead.orchestrator.progress"):
        publisher({"n": 1})
        wait_for(lambda: store.attempts)
        publisher({"n": 2})
        started = time.monotonic()
        assert publisher.close(timeout=3.0)
        assert time.monotonic() - started < 1.0
    assert store.stored == []
    assert len(store.attempts) == 2
    assert events(caplog) == ["progress_publish_failed", "progress_publish_dropped"]


def test_close_does_not_wait_past_its_timeout_for_a_hung_store():
    store = FlakyStore(delay=3.0)
    publisher = ProgressPublisher(store, "job-6")
    publisher({"n": 1})
    wait_for(lambda: store.attempts)
    started = time.monotonic()
    assert publisher.close(timeout=0.3) is False
    assert time.monotonic() - started < 1.0


def test_progress_backend_tries_once_and_fails_fast():
    """The backend progress goes through makes one attempt with short socket timeouts; the
    app's own backend (a job's final state) retries."""
    pytest.importorskip("redis")
    from talkinghead.orchestrator import tasks
    from talkinghead.orchestrator.celery_app import make_app

    app = make_app("redis://127.0.0.1:1/0", "redis://127.0.0.1:1/0")
    saved = tasks._progress_backend
    tasks._progress_backend = None
    try:
        backend = tasks.progress_backend(app)
    finally:
        tasks._progress_backend = saved
    assert backend is not app.backend
    assert backend.always_retry is False and backend.retry_policy["max_retries"] == 0
    assert backend.connparams["socket_connect_timeout"] == 2.0
    assert backend.connparams["socket_timeout"] == 5.0
    started = time.monotonic()
    with pytest.raises(Exception) as failed:  # nothing listens on port 1
        backend.store_result("job-7", {"n": 1}, "PROGRESS")
    assert app.backend.exception_safe_to_retry(failed.value)
    assert time.monotonic() - started < 1.0
    assert app.backend.always_retry is True
