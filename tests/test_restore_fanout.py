"""Restore scale-out: chunks spread over replicas, a replica killed mid-job, order kept,
every frame restored exactly once; a failed replica leaves the rotation and a restarted
one is health-checked back in. (The same through a real Celery worker:
test_restore_replica_down.py.)"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time

import numpy as np
import pytest

from talkinghead.local_stack import LocalStack
from talkinghead.orchestrator.restore_fanout import IN_FLIGHT, OK, RestoreFanout
from talkinghead.orchestrator.stage_clients import StageFailed, probe_serving
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.common.logs import JsonFormatter, job_context


@pytest.fixture()
def two_replicas(tmp_path):
    stack = LocalStack(tmp_path, engine="lite", restore_replicas=2)
    with stack:
        yield stack


def frames_of(photo, face, n):
    return (VideoFrame(i, photo, face) for i in range(n))


class JsonRecords(logging.Handler):
    """Log records as the worker writes them (JsonFormatter, formatted in the emitting
    thread, as a StreamHandler does)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter("test"))
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture()
def fanout_log():
    handler = JsonRecords()
    logger = logging.getLogger("talkinghead.orchestrator")
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(saved)


def test_replica_killed_mid_job(two_replicas, photo, face):
    """A replica dies with a chunk in flight: that chunk is re-sent to the live replica
    first and completes there; the dead replica leaves the rotation and gets no chunk
    again; every frame comes out once, in order, restored."""
    stack = two_replicas
    victim_target, survivor = stack.targets.restore
    victim = next(p for p in stack.processes if p.name == "restore-0")
    caught: list[int] = []  # chunks in flight on the victim when it was killed
    tries = {"n": 0}

    def on_chunk(n_frames: int) -> None:
        if caught or tries["n"] >= 10:
            return
        tries["n"] += 1
        # Frozen, the victim can answer nothing more: whatever is in flight on it after a
        # pause (for a reply already on the wire to land) is in flight when it dies.
        victim.popen.send_signal(signal.SIGSTOP)
        time.sleep(1.0)
        caught.extend(fanout.in_flight_on(victim_target))
        victim.popen.send_signal(signal.SIGKILL if caught else signal.SIGCONT)

    # Health checks of the dead replica from the first moment: it must stay out because
    # it does not answer them, not because nobody asked.
    fanout = RestoreFanout(stack.targets.restore, "test-kill", chunk_frames=8,
                           probe_seconds=0.05, probe_max_seconds=0.2, on_chunk_done=on_chunk)
    out = list(fanout.restore(frames_of(photo, face, 240)))
    assert victim.popen.wait(10) == -signal.SIGKILL
    assert caught, "the victim never had a chunk in flight when it was frozen"
    for n in caught:
        (first_target, first_outcome), *rest = fanout.attempts[n]
        assert first_target == victim_target and first_outcome not in (OK, IN_FLIGHT)
        assert rest == [(survivor, OK)], fanout.attempts[n]  # re-sent to the live one first
    # A failure on the dead replica is always followed by an attempt on the live one.
    for n, attempts in fanout.attempts.items():
        for (target, outcome), following in zip(attempts, attempts[1:], strict=False):
            if outcome != OK:
                assert target == victim_target and following[0] == survivor, (n, attempts)
    # Out of rotation once, never back (it is dead), and no chunk tried on it after that.
    assert [(t, change) for _, t, change, _ in fanout.rotation] == [(victim_target, "out")]
    assert list(fanout.out_of_rotation()) == [victim_target]
    assert "UNAVAILABLE" in fanout.out_of_rotation()[victim_target]
    assert sum(1 for a in fanout.attempts.values() for t, o in a if t == victim_target
               and o != OK) == len(caught)
    # Each of the 30 chunks completed exactly once, as the counts say.
    assert sorted(fanout.attempts) == list(range(30))
    finals = [attempts[-1] for attempts in fanout.attempts.values()]
    assert all(outcome == OK for _, outcome in finals)
    assert [sum(1 for _, o in a if o == OK) for a in fanout.attempts.values()] == [1] * 30
    assert fanout.chunks_per_target == {
        t: sum(1 for target, _ in finals if target == t) for t in stack.targets.restore}
    assert [f.index for f in out] == list(range(240))  # every frame once, in order
    assert all(not np.array_equal(f.image, photo) for f in out)  # really restored


def test_restarted_replica_is_probed_back_into_rotation(two_replicas, photo, face, fanout_log):
    """SIGKILL a replica mid-run, restart it on the same port: a health check takes it
    back into rotation and it restores chunks again, in the same run. The fan-out's log
    lines (from its own threads) name the job."""
    stack = two_replicas
    survivor, victim_target = stack.targets.restore  # restore-0, restore-1
    port = int(victim_target.rsplit(":", 1)[1])
    victim = next(p for p in stack.processes if p.name == "restore-1")
    n_frames, chunk = 400, 8
    killed_at_chunk = 5
    rejoined = threading.Event()
    marks: dict[str, float] = {}

    def source():
        """Frames; after the kill the rest wait until the victim is back, so there is
        work left for it when it returns (the test cannot pass by timing)."""
        for i in range(n_frames):
            if i == (killed_at_chunk + 10) * chunk:
                assert rejoined.wait(90), "the restarted replica never rejoined"
            yield VideoFrame(i, photo, face)

    def on_chunk(_: int) -> None:
        done = sum(fanout.chunks_per_target.values())
        if "killed" not in marks and done >= killed_at_chunk:
            victim.popen.send_signal(signal.SIGKILL)
            victim.popen.wait(10)
            marks["killed"] = time.monotonic()
            threading.Thread(target=restart, daemon=True).start()

    def restart() -> None:
        # it must leave the rotation first (a chunk sent to it fails), then come back
        deadline = time.monotonic() + 60
        while victim_target not in fanout.out_of_rotation() and time.monotonic() < deadline:
            time.sleep(0.05)
        stack.processes.remove(victim)
        stack.start_server("restore", port, "restore-1-again")
        while probe_serving(victim_target) != "SERVING" and time.monotonic() < deadline:
            time.sleep(0.2)
        marks["serving"] = time.monotonic()
        while victim_target in fanout.out_of_rotation() and time.monotonic() < deadline:
            time.sleep(0.05)
        marks["rejoined"] = time.monotonic()
        rejoined.set()

    fanout = RestoreFanout(stack.targets.restore, "test-rejoin", chunk_frames=chunk,
                           probe_seconds=0.2, probe_max_seconds=1.0, on_chunk_done=on_chunk)
    with job_context("test-rejoin"):
        out = list(fanout.restore(source()))
    assert [f.index for f in out] == list(range(n_frames))
    assert all(not np.array_equal(f.image, photo) for f in out[:: chunk])
    changes = [(t, change) for _, t, change, _ in fanout.rotation]
    assert changes == [(victim_target, "out"), (victim_target, "in")], fanout.rotation
    back_at = next(when for when, _, change, _ in fanout.rotation if change == "in")
    # back within a probe interval or so of SERVING (probe_max 1 s, +-20 % jitter)
    assert back_at - marks["serving"] < 2.5, (back_at, marks)
    # it takes chunks again after its return
    assert fanout.out_of_rotation() == {}
    after = [n for n, tries in fanout.attempts.items()
             if tries[-1] == (victim_target, OK) and n >= killed_at_chunk + 10]
    assert after, fanout.attempts
    assert fanout.chunks_per_target[survivor] > 0
    # Every line of the fan-out (its threads included) says which job it is.
    fan_lines = [line for line in fanout_log
                 if line["logger"] == "talkinghead.orchestrator.restore_fanout"]
    msgs = " | ".join(line["msg"] for line in fan_lines)
    assert "taken out of rotation" in msgs and "back in rotation" in msgs, msgs
    assert {line["job"] for line in fan_lines} == {"test-rejoin"}, fan_lines


def test_both_replicas_take_work(two_replicas, photo, face):
    fanout = RestoreFanout(two_replicas.targets.restore, "test-spread", chunk_frames=4)
    out = list(fanout.restore(frames_of(photo, face, 160)))
    assert [f.index for f in out] == list(range(160))
    assert all(count > 0 for count in fanout.chunks_per_target.values())


def test_all_replicas_gone_is_a_clear_failure(tmp_path, photo, face):
    fanout = RestoreFanout(["127.0.0.1:1"], "test-none", chunk_frames=4, max_attempts=2,
                           probe_seconds=0.05, all_down_seconds=1.0, chunk_timeout=2.0)
    started = time.monotonic()
    with pytest.raises(StageFailed, match=r"no restore replica in rotation for \d+ s: "
                                          r"127.0.0.1:1 \(UNAVAILABLE") as info:
        list(fanout.restore(frames_of(photo, face, 8)))
    assert info.value.code.name == "UNAVAILABLE"  # transient: the task retries the job
    assert 1.0 <= time.monotonic() - started < 10
