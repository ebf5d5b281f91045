"""Restore, spread over every replica: the pipeline's bottleneck, scaled out.

Frames arrive in order and are cut into chunks. Each replica has a worker thread that
takes the next chunk from a shared queue, so a fast replica simply takes more chunks and
every replica stays busy. A chunk whose replica fails (down, overloaded, too slow) is
re-sent first to a replica it has not failed on (a dead replica would otherwise take its
own failed chunk back and burn the chunk's attempts), and the failing replica rests for a
moment. Chunks come out in their original order. A window bounds the chunks in flight, so
memory does not grow with the length of the video. ``attempts`` records where each chunk
went and how it ended, for logs and metrics.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import grpc

from talkinghead.orchestrator.stage_clients import RestoreClient, StageFailed
from talkinghead.services.common.frames import VideoFrame

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
}
_DONE = object()
IN_FLIGHT = "in flight"  # the outcome of an attempt not answered yet
OK = "ok"


class RestoreFanout:
    def __init__(
        self,
        targets: Iterable[str],
        job_id: str = "-",
        chunk_frames: int = 16,
        weight: float = 0.5,
        chunk_timeout: float = 600.0,
        max_attempts: int = 5,
        rest_seconds: float = 1.0,
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
        self.rest_seconds = rest_seconds
        self.on_chunk_done = on_chunk_done
        self.chunks_per_target: dict[str, int] = {t: 0 for t in self.targets}
        # chunk index -> [(target, outcome)] in order; outcome is IN_FLIGHT, OK or the
        # gRPC status name of the failure. Says where a chunk was when a replica died.
        self.attempts: dict[int, list[tuple[str, str]]] = {}
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

    def _note(self, n: int, target: str, outcome: str) -> None:
        with self._record:
            tries = self.attempts.setdefault(n, [])
            if tries and tries[-1] == (target, IN_FLIGHT):
                tries[-1] = (target, outcome)
            else:
                tries.append((target, outcome))

    def restore(self, frames: Iterable[VideoFrame]) -> Iterator[VideoFrame]:
        """Restored frames, in input order."""
        with self._record:
            self.attempts.clear()  # this run's record only
        work: queue.Queue = queue.Queue()
        # Failed chunks, with the replicas they failed on; taken before new work.
        retries: list[tuple[int, list[VideoFrame], set[str]]] = []
        results: dict[int, list[VideoFrame]] = {}
        attempts: dict[int, int] = {}
        cond = threading.Condition()
        window = threading.Semaphore(4 * len(self.targets))
        state = {"fed": None, "error": None, "stop": False}

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
            """A failed chunk for ``target``: one it has not failed, or one every replica has."""
            with cond:
                for i, (_, _, failed_on) in enumerate(retries):
                    if target not in failed_on or failed_on.issuperset(self.targets):
                        return retries.pop(i)
            return None

        def serve(target: str) -> None:
            client = RestoreClient(target, self.job_id)
            self._clients.append(client)
            try:
                while not state["stop"] and not self._cancelled:
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
                    except (grpc.RpcError, StageFailed) as err:
                        code = err.code() if isinstance(err, grpc.RpcError) else err.code
                        details = err.details() if isinstance(err, grpc.RpcError) else str(err)
                        self._note(n, target, code.name)
                        if self._cancelled:
                            fail(StageFailed("restore", grpc.StatusCode.CANCELLED,
                                             "the job was stopped"))
                            return
                        attempts[n] = attempts.get(n, 0) + 1
                        if code not in RETRYABLE and code != grpc.StatusCode.DATA_LOSS:
                            fail(StageFailed("restore", code, details))
                            return
                        if attempts[n] >= self.max_attempts:
                            fail(StageFailed(
                                "restore", code,
                                f"chunk {n} failed {attempts[n]} times, last on {target}: "
                                f"{details}",
                            ))
                            return
                        log.warning(
                            "restore chunk %d failed on %s (%s: %s); re-queued for another "
                            "replica", n, target, code.name, details,
                        )
                        with cond:
                            retries.append((n, chunk, failed_on | {target}))
                        time.sleep(self.rest_seconds)  # let the others take it
                        continue
                    self._note(n, target, OK)
                    with cond:
                        if client.engine is not None:
                            self.engine_name = client.engine.name
                        results[n] = restored
                        self.chunks_per_target[target] += 1
                        cond.notify_all()
            finally:
                client.close()

        threads = [threading.Thread(target=feed, name="restore-feed", daemon=True)]
        threads += [
            threading.Thread(target=serve, args=(t,), name=f"restore-{t}", daemon=True)
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
