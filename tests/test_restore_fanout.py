"""Restore scale-out: chunks spread over replicas, a replica killed mid-job, order kept,
every frame restored exactly once."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest

from talkinghead.local_stack import LocalStack
from talkinghead.orchestrator.restore_fanout import IN_FLIGHT, OK, RestoreFanout
from talkinghead.orchestrator.stage_clients import StageFailed
from talkinghead.services.common.frames import VideoFrame


@pytest.fixture()
def two_replicas(tmp_path):
    stack = LocalStack(tmp_path, engine="lite", restore_replicas=2)
    with stack:
        yield stack


def frames_of(photo, face, n):
    return (VideoFrame(i, photo, face) for i in range(n))


def test_replica_killed_mid_job(two_replicas, photo, face):
    """A replica dies with a chunk in flight: that chunk is re-sent to the live replica
    first and completes there; every frame comes out once, in order, restored."""
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

    # No rest after a failure: the re-send must reach the live replica by design, not
    # because the dead one happens to be resting when the chunk is taken again.
    fanout = RestoreFanout(stack.targets.restore, "test-kill", chunk_frames=8,
                           rest_seconds=0.0, on_chunk_done=on_chunk)
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
    # Each of the 30 chunks completed exactly once, as the counts say.
    assert sorted(fanout.attempts) == list(range(30))
    finals = [attempts[-1] for attempts in fanout.attempts.values()]
    assert all(outcome == OK for _, outcome in finals)
    assert [sum(1 for _, o in a if o == OK) for a in fanout.attempts.values()] == [1] * 30
    assert fanout.chunks_per_target == {
        t: sum(1 for target, _ in finals if target == t) for t in stack.targets.restore}
    assert [f.index for f in out] == list(range(240))  # every frame once, in order
    assert all(not np.array_equal(f.image, photo) for f in out)  # really restored


def test_both_replicas_take_work(two_replicas, photo, face):
    fanout = RestoreFanout(two_replicas.targets.restore, "test-spread", chunk_frames=4)
    out = list(fanout.restore(frames_of(photo, face, 160)))
    assert [f.index for f in out] == list(range(160))
    assert all(count > 0 for count in fanout.chunks_per_target.values())


def test_all_replicas_gone_is_a_clear_failure(tmp_path, photo, face):
    fanout = RestoreFanout(["127.0.0.1:1"], "test-none", chunk_frames=4, max_attempts=2,
                           rest_seconds=0.05, chunk_timeout=2.0)
    with pytest.raises(StageFailed, match="chunk 0 failed 2 times"):
        list(fanout.restore(frames_of(photo, face, 8)))
