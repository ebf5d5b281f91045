"""Restore, spread over every replica: the pipeline's bottleneck, scaled out.

Frames arrive in order and are cut into chunks. Each replica has a worker thread that
takes the next chunk from a shared queue, so a fast replica simply takes more chunks and
every replica stays busy. Chunks come out in their original order. A window bounds the
chunks in flight, so memory does not grow with the length of the video. ``attempts``
records where each chunk went and how it ended, for logs and metrics.

What a replica's failure does:

* **down, broken or too slow** (UNAVAILABLE, connection refused, DEADLINE_EXCEEDED, ...):
  the chunk is re-sent to a replica it has not failed on, and the replica is **taken out
  of rotation** for this job: it takes no chunk until a health check (a fresh channel,
  after a backoff that doubles up to ``probe_max_seconds``) says SERVING, then it rejoins.
  A job goes on with the replicas left; when every replica has been out for
  ``all_down_seconds`` it fails (UNAVAILABLE, a transient failure the task retries). A
  chunk that fails ``max_attempts`` times fails the job (a chunk that breaks every
  replica is not the replicas' fault).
* **full** (RESOURCE_EXHAUSTED: the replica is at its stream limit, serving other jobs):
  not a failure. The chunk goes back to the queue for any replica, this replica waits a
  backoff with jitter, and nothing counts against ``max_attempts``; the job waits for
  capacity until its ``deadline``.

Log lines of the fan-out's threads carry the job id, like the rest of the job.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import grpc

from talkinghead.orchestrator.stage_clients import (
    BusyBackoff,
    RestoreClient,
    StageFailed,
    probe_serving,
)
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.common.logs import job_context

log = logging.getLogger(__name__)

# Failures that say "this replica, now" rather than "this input": try another replica.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS,
}
BUSY = grpc.StatusCode.RESOURCE_EXHAUSTED  # full now: wait for capacity, not a failure
_DONE = object()
IN_FLIGHT = "in flight"  # the outcome of an attempt not answered yet
OK = "ok"


@dataclass
class Replica:
    """One replica's place in this job's rotation."""

    target: str
    out_since: float | None = None  # time.monotonic() when taken out; None: in rotation
    reason: str = ""  # why it was taken out (the failure, or the health check's answer)
    next_probe: float = 0.0
    probe_wait: float = 0.0
    probes: int = 0  # health checks since it was taken out
    strikes: int = 0  # times taken out since its last restored chunk

    @property
    def in_rotation(self) -> bool:
        return self.out_since is None


class RestoreFanout:
    def __init__(
        self,
        targets: Iterable[str],
        job_id: str = "-",
        chunk_frames: int = 16,
        weight: float = 0.5,
        chunk_timeout: float = 600.0,
        max_attempts: int = 5,
        probe_seconds: float = 0.5,
        probe_max_seconds: float = 10.0,
        all_down_seconds: float = 120.0,
        deadline: float | None = None,
        out_of_rotation: dict[str, str] | None = None,
        on_chunk_done: Callable[[int], None] | None = None,
    ):
        self.targets = list(dict.fromkeys(targets))
        if not self.targets:
            raise ValueError("at least one restore target is required")
        self.job_id = job_id
        self.chunk_frames = chunk_frames
        self.weight = weight
        self.chunk_timeout = chunk_timeout
        self.max_attempts = max_attempts
        self.probe_seconds = probe_seconds  # first health check after a failure
        self.probe_max_seconds = probe_max_seconds  # the backoff's cap
        self.all_down_seconds = all_down_seconds
        self.deadline = deadline  # time.monotonic() the job must end by (None: none)
        self.initially_out = dict(out_of_rotation or {})  # target -> why (stage wait)
        self.on_chunk_done = on_chunk_done
        self.chunks_per_target: dict[str, int] = {t: 0 for t in self.targets}
        # chunk index -> [(target, outcome)] in order; outcome is IN_FLIGHT, OK or the
        # gRPC status name of the failure. Says where a chunk was when a replica died.
        self.attempts: dict[int, list[tuple[str, str]]] = {}
        # (time.monotonic(), target, "out" | "in", reason): the rotation's changes
        self.rotation: list[tuple[float, str, str, str]] = []
        self.replicas = {t: Replica(t) for t in self.targets}
        self.busy_waits = 0  # chunks turned away by a full replica and queued again
        self._record = threading.Lock()
        self.engine_name = ""  # as the replicas report it
        self._clients: list[RestoreClient] = []
        self._cancelled = False

    def cancel(self) -> None:
        """Stop now, from any thread: chunks in flight are cancelled on their replicas."""
        self._cancelled = True
        for client in list(self._clients):
            client.cancel()

    def in_flight_on(self, target: str) -> list[int]:
        """Chunks sent to ``target`` and not answered yet: what its death would cost."""
        with self._record:
            return [n for n, tries in self.attempts.items() if tries[-1] == (target, IN_FLIGHT)]

    def out_of_rotation(self) -> dict[str, str]:
        """Replicas out of rotation now, with the reason each was taken out."""
        with self._record:
            return {t: r.reason for t, r in self.replicas.items() if not r.in_rotation}

    def ever_out(self) -> dict[str, str]:
        """Replicas taken out at some point of this run, with the last reason."""
        with self._record:
            return {t: reason for _, t, change, reason in self.rotation if change == "out"}

    def _note(self, n: int, target: str, outcome: str) -> None:
        with self._record:
            tries = self.attempts.setdefault(n, [])
            if tries and tries[-1] == (target, IN_FLIGHT):
                tries[-1] = (target, outcome)
            else:
                tries.append((target, outcome))

    def _probe_delay(self, replica: Replica) -> float:
        """Doubling from ``probe_seconds`` to ``probe_max_seconds``, +-20 % jitter. A replica
        that fails again soon after coming back (SERVING, yet failing chunks) starts from
        a longer wait each time, until it restores a chunk."""
        if replica.probes == 0:
            wait = self.probe_seconds * 2 ** min(max(replica.strikes - 1, 0), 30)
        else:
            wait = max(replica.probe_wait, self.probe_seconds) * 2
        replica.probe_wait = min(self.probe_max_seconds, wait)
        return replica.probe_wait * random.uniform(0.8, 1.2)

    def _take_out(self, replica: Replica, reason: str) -> None:
        now = time.monotonic()
        with self._record:
            replica.out_since, replica.reason, replica.probes = now, reason, 0
            replica.strikes += 1
            replica.next_probe = now + self._probe_delay(replica)
            self.rotation.append((now, replica.target, "out", reason))
            left = [t for t, r in self.replicas.items() if r.in_rotation]
        log.warning(
            "restore replica %s taken out of rotation (%s); %s; health-checking it from "
            "every %.1f s up to every %.0f s to take it back", replica.target, reason,
            f"{len(left)} of {len(self.targets)} left: {', '.join(left)}" if left
            else "no replica left in rotation", self.probe_seconds, self.probe_max_seconds,
        )

    def _bring_back(self, replica: Replica) -> None:
        now = time.monotonic()
        with self._record:
            out_for = now - (replica.out_since or now)
            replica.out_since, replica.reason, replica.probes = None, "", 0
            self.rotation.append((now, replica.target, "in", "health check: SERVING"))
        log.info("restore replica %s back in rotation (SERVING again after %.1f s out)",
                 replica.target, out_for)

    def _all_down_for(self) -> float | None:
        """How long every replica has been out of rotation, or None if one is in."""
        with self._record:
            if any(r.in_rotation for r in self.replicas.values()):
                return None
            return time.monotonic() - max(r.out_since or 0.0 for r in self.replicas.values())

    def restore(self, frames: Iterable[VideoFrame]) -> Iterator[VideoFrame]:
        """Restored frames, in input order."""
        with self._record:
            self.attempts.clear()  # this run's record only
            self.rotation.clear()
        for target, reason in self.initially_out.items():
            if target in self.replicas:
                self._take_out(self.replicas[target], reason)
        work: queue.Queue = queue.Queue()
        # Chunks to send again, with the replicas they failed on; taken before new work.
        retries: list[tuple[int, list[VideoFrame], set[str]]] = []
        results: dict[int, list[VideoFrame]] = {}
        attempts: dict[int, int] = {}  # failures per chunk (a busy replica is not one)
        cond = threading.Condition()
        window = threading.Semaphore(4 * len(self.targets))
        state = {"fed": None, "error": None, "stop": False}

        def stopped() -> bool:
            return state["stop"] or self._cancelled

        def fail(exc: BaseException) -> None:
            with cond:
                if state["error"] is None:
                    state["error"] = exc
                state["stop"] = True
                cond.notify_all()

        def feed() -> None:
            try:
                n, chunk = 0, []
                for frame in frames:
                    chunk.append(frame)
                    if len(chunk) == self.chunk_frames:
                        while not window.acquire(timeout=0.2):
                            if state["stop"]:
                                return
                        work.put((n, chunk))
                        n, chunk = n + 1, []
                    if state["stop"]:
                        return
                if chunk:
                    window.acquire()
                    work.put((n, chunk))
                    n += 1
                with cond:
                    state["fed"] = n
                    cond.notify_all()
            except BaseException as exc:  # noqa: BLE001 - upstream stage failed: end the job
                fail(exc)

        def take_retry(target: str) -> tuple[int, list[VideoFrame], set[str]] | None:
            """A chunk to send again that ``target`` may take: one it has not failed, or one
            every other replica in rotation has failed too (no better place for it)."""
            with self._record:
                others = {t for t, r in self.replicas.items() if r.in_rotation} - {target}
            with cond:
                for i, (_, _, failed_on) in enumerate(retries):
                    if target not in failed_on or failed_on.issuperset(others):
                        return retries.pop(i)
            return None

        def sleep(seconds: float) -> None:
            end = time.monotonic() + seconds
            while not stopped() and (left := end - time.monotonic()) > 0:
                time.sleep(min(left, 0.05))

        def probe(replica: Replica) -> bool:
            """Out of rotation: health-check when due; True when it is back in."""
            down_for = self._all_down_for()
            if down_for is not None and down_for >= self.all_down_seconds:
                fail(StageFailed(
                    "restore", grpc.StatusCode.UNAVAILABLE,
                    f"no restore replica in rotation for {down_for:.0f} s: " + "; ".join(
                        f"{t} ({reason})" for t, reason in self.out_of_rotation().items()),
                ))
                return False
            if time.monotonic() < replica.next_probe:
                sleep(min(0.1, replica.next_probe - time.monotonic()))
                return False
            status = probe_serving(replica.target)
            if status == "SERVING":
                self._bring_back(replica)
                return True
            with self._record:
                replica.probes += 1
                replica.next_probe = time.monotonic() + self._probe_delay(replica)
            log.debug("restore replica %s still out: %s", replica.target, status)
            return False

        def serve(target: str) -> None:
            replica = self.replicas[target]
            busy = BusyBackoff(self.deadline)
            client: RestoreClient | None = None
            try:
                while not stopped():
                    if not replica.in_rotation:
                        if not probe(replica):
                            continue
                    if client is None:  # a fresh channel after an outage: no stale backoff
                        client = RestoreClient(target, self.job_id)
                        self._clients.append(client)
                    retry = take_retry(target)
                    if retry is not None:
                        n, chunk, failed_on = retry
                    else:
                        try:
                            item = work.get(timeout=0.2)
                        except queue.Empty:
                            continue
                        if item is _DONE:
                            return
                        (n, chunk), failed_on = item, set()
                    self._note(n, target, IN_FLIGHT)
                    try:
                        restored = client.restore(chunk, self.weight, timeout=self.chunk_timeout)
                        if len(restored) != len(chunk):
                            raise StageFailed(
                                "restore", grpc.StatusCode.DATA_LOSS,
                                f"{target} returned {len(restored)} of {len(chunk)} frames",
                            )
                    except StageFailed as err:
                        code, full, details = err.code, err.busy, err.details
                        self._note(n, target, code.name)
                        if stopped():
                            fail(StageFailed("restore", grpc.StatusCode.CANCELLED,
                                             "the job was stopped"))
                            return
                        if code not in RETRYABLE or (code == BUSY and not full):
                            # (RESOURCE_EXHAUSTED without the busy mark: a message over a
                            # size limit, the same on every replica)
                            fail(StageFailed("restore", code, details))
                            return
                        if full:
                            # Full with other jobs' streams: the chunk goes back for any
                            # replica, this one waits its backoff. No attempt is used up.
                            with cond:
                                retries.append((n, chunk, failed_on))
                                self.busy_waits += 1
                            if busy.total_waits == 0:
                                log.info("restore replica %s is busy (%s); chunk %d queued "
                                         "again, waiting for capacity (%s)", target, details,
                                         n, busy.left())
                            if not busy.wait(stopped) and not stopped():
                                fail(StageFailed(
                                    "restore", code,
                                    f"chunk {n}: {details} (every try turned away until the "
                                    f"job's deadline, {busy.total_waits} waits on {target})",
                                ))
                                return
                            continue
                        attempts[n] = attempts.get(n, 0) + 1
                        if attempts[n] >= self.max_attempts:
                            fail(StageFailed(
                                "restore", code,
                                f"chunk {n} failed {attempts[n]} times, last on {target}: "
                                f"{details}",
                            ))
                            return
                        with cond:
                            retries.append((n, chunk, failed_on | {target}))
                            cond.notify_all()
                        log.warning("restore chunk %d failed on %s (%s: %s); sent again to "
                                    "another replica", n, target, code.name, details)
                        client.close()
                        self._clients.remove(client)
                        client = None
                        self._take_out(replica, f"{code.name}: {details}")
                        continue
                    busy.reset()
                    replica.strikes = 0
                    self._note(n, target, OK)
                    with cond:
                        if client.engine is not None:
                            self.engine_name = client.engine.name
                        results[n] = restored
                        self.chunks_per_target[target] += 1
                        cond.notify_all()
            finally:
                if client is not None:
                    client.close()

        def in_job(fn: Callable, *args, stage: str | None = None) -> Callable[[], None]:
            """``fn`` in a copy of this context, tagged with the job: threads do not inherit
            context variables, and their log lines would say "job": "-"."""
            context = contextvars.copy_context()

            def run() -> None:
                with job_context(None if self.job_id == "-" else self.job_id, stage):
                    try:
                        fn(*args)
                    except Exception as exc:  # a bug here must fail the job, never hang it
                        log.exception("restore fan-out thread failed")
                        fail(exc)

            return lambda: context.run(run)

        threads = [threading.Thread(target=in_job(feed), name="restore-feed", daemon=True)]
        threads += [
            threading.Thread(target=in_job(serve, t, stage="restore"), name=f"restore-{t}", daemon=True)
            for t in self.targets
        ]
        for t in threads:
            t.start()
        try:
            n = 0
            while True:
                with cond:
                    while n not in results and state["error"] is None and state["fed"] != n:
                        cond.wait(timeout=0.5)
                    if state["error"] is not None:
                        raise state["error"]
                    if state["fed"] == n:
                        return
                    chunk = results.pop(n)
                window.release()
                if self.on_chunk_done:
                    self.on_chunk_done(len(chunk))
                yield from chunk
                n += 1
        finally:
            state["stop"] = True
            self.cancel()  # chunks still in flight (the job ended early) free their replicas
            for _ in self.targets:
                work.put(_DONE)
