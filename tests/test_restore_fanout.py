"""Restore scale-out: chunks spread over replicas, a replica killed mid-job, order kept,
every frame restored exactly once."""

from __future__ import annotations

import signal

import numpy as np
import pytest

from talkinghead.local_stack import LocalStack
from talkinghead.orchestrator.restore_fanout import RestoreFanout
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
    stack = two_replicas
    victim = next(p for p in stack.processes if p.name == "restore-0")
    done = {"chunks": 0}

    def on_chunk(n_frames: int) -> None:
        done["chunks"] += 1
        if done["chunks"] == 3:
            victim.popen.send_signal(signal.SIGKILL)

    fanout = RestoreFanout(stack.targets.restore, "test-kill", chunk_frames=8,
                           rest_seconds=0.2, on_chunk_done=on_chunk)
    out = list(fanout.restore(frames_of(photo, face, 240)))
    assert victim.popen.wait(10) == -signal.SIGKILL
    assert [f.index for f in out] == list(range(240))  # every frame once, in order
    assert sum(fanout.chunks_per_target.values()) == 30
    survivor = stack.targets.restore[1]
    assert fanout.chunks_per_target[survivor] >= 30 - fanout.chunks_per_target[
        stack.targets.restore[0]]
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
