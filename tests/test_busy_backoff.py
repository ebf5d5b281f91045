"""Overload is waited out, not retried against a budget (issue #14, "Also seen"): servers
started with ``--max-streams 1``, their one stream held by another caller, and several
callers at once. Each caller is turned away with RESOURCE_EXHAUSTED, waits (backoff with
jitter) and completes once the stream is free, with nothing counted against a retry
budget (the restore fan-out runs with max_attempts=1). Past the job's deadline the wait
ends with a clear RESOURCE_EXHAUSTED."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc
import numpy as np
import pytest

from talkinghead.local_stack import LocalStack
from talkinghead.orchestrator.restore_fanout import RestoreFanout
from talkinghead.orchestrator.stage_clients import (
    BusyBackoff,
    LipSyncClient,
    MotionClient,
    StageFailed,
    open_channel,
)
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.motion.options import MotionOptions
from talkinghead.v1 import (
    frames_pb2,
    lipsync_pb2,
    lipsync_pb2_grpc,
    restore_pb2,
    restore_pb2_grpc,
)
from tests.celery_jobs import metric, wait_until

CALLERS = 3


@pytest.fixture(scope="module")
def one_stream(tmp_path_factory):
    """Lite servers that take one stream at a time, with metrics."""
    one = ["--max-streams", "1"]
    stack = LocalStack(tmp_path_factory.mktemp("busy-logs"), engine="lite", restore_replicas=1,
                       with_metrics=True,
                       server_args={"motion": one, "lipsync": one, "restore": one})
    with stack:
        yield stack


def port_of(stack: LocalStack, stage: str) -> int:
    return stack.metrics_ports["restore-0" if stage == "restore" else stage]


def in_flight(stack: LocalStack, stage: str) -> float:
    return metric(port_of(stack, stage), "talkinghead_streams_in_flight")


def turned_away(stack: LocalStack, stage: str) -> float:
    return metric(port_of(stack, stage), "talkinghead_requests_total",
                  code="RESOURCE_EXHAUSTED")


def target_of(stack: LocalStack, stage: str) -> str:
    return stack.targets.restore[0] if stage == "restore" else getattr(stack.targets, stage)


class Holder:
    """Takes the server's only stream and keeps it until ``release``."""

    def __init__(self, stack: LocalStack, stage: str, demo_face, audio: bytes):
        self.released = threading.Event()
        self.channel = open_channel(target_of(stack, stage))
        if stage == "motion":
            # the client stops reading: the server's stream waits on flow control
            client = MotionClient(target_of(stack, stage), "holder")
            self.thread = threading.Thread(target=lambda: client.animate(
                demo_face.read_bytes(), "talking", MotionOptions(),
                on_frame=lambda *_: self.released.wait(60)), daemon=True)
        else:
            # the stream is open, its input not ended
            def requests():
                if stage == "lipsync":
                    config = frames_pb2.Audio(encoded_file=audio)
                    yield lipsync_pb2.SyncRequest(config=lipsync_pb2.SyncConfig(
                        audio=config, fps=25.0))
                else:
                    yield restore_pb2.RestoreRequest(config=restore_pb2.RestoreConfig(weight=0.5))
                self.released.wait(60)

            stub = (lipsync_pb2_grpc.LipSyncServiceStub(self.channel).Sync if stage == "lipsync"
                    else restore_pb2_grpc.RestoreServiceStub(self.channel).Restore)

            def run():
                try:
                    list(stub(requests(), timeout=90))
                except grpc.RpcError:
                    pass  # an empty stream may be refused: it only held the slot

            self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        wait_until(lambda: in_flight(stack, stage) == 1, 30, f"the {stage} stream to be held")

    def release(self) -> None:
        self.released.set()
        self.thread.join(60)
        self.channel.close()


def caller(stack: LocalStack, stage: str, photo, face, demo_face, audio: bytes,
           deadline: float, max_attempts: int = 1) -> Callable[[], object]:
    target = target_of(stack, stage)
    frames = [VideoFrame(i, photo, face) for i in range(40)]
    if stage == "motion":
        def call():
            client = MotionClient(target, "busy")
            clip, _ = client.animate(demo_face.read_bytes(), "talking", MotionOptions(),
                                     busy_deadline=deadline)
            return clip, client.busy.total_waits
    elif stage == "lipsync":
        def call():
            client = LipSyncClient(target, "busy")
            out = list(client.sync(iter(frames), audio, 25.0, busy_deadline=deadline))
            return out, client.busy.total_waits
    else:
        def call():
            fanout = RestoreFanout([target], "busy", chunk_frames=8, max_attempts=max_attempts,
                                   deadline=deadline)
            return list(fanout.restore(iter(frames))), fanout.busy_waits
    return call


@pytest.fixture(scope="module")
def speech(assets_dir) -> bytes:
    return (assets_dir / "speech_3s.wav").read_bytes()


@pytest.mark.parametrize("stage", ["motion", "lipsync", "restore"])
def test_busy_server_is_waited_for(one_stream, stage, photo, face, demo_face, speech):
    stack = one_stream
    before = turned_away(stack, stage)
    holder = Holder(stack, stage, demo_face, speech)
    outcomes: dict[int, object] = {}

    def run(i: int, call) -> None:
        try:
            outcomes[i] = call()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcomes[i] = exc

    deadline = time.monotonic() + 120
    threads = [threading.Thread(target=run, args=(i, caller(stack, stage, photo, face,
                                                            demo_face, speech, deadline)))
               for i in range(CALLERS)]
    try:
        for t in threads:
            t.start()
        # every caller is turned away at least once while the stream is held
        wait_until(lambda: turned_away(stack, stage) - before >= CALLERS, 30,
                   "each caller to be turned away", poll=0.1)
    finally:
        holder.release()
    for t in threads:
        t.join(120)
    errors = {i: o for i, o in outcomes.items() if isinstance(o, Exception)}
    assert not errors, errors
    assert len(outcomes) == CALLERS
    outputs = [o[0] for o in outcomes.values()]
    assert sum(o[1] for o in outcomes.values()) >= CALLERS  # they waited, they did not fail
    if stage != "motion":
        for out in outputs:  # every frame once, in order (the replayed input included)
            assert [f.index for f in out] == list(range(40))
    for out in outputs[1:]:  # the same input gives the same frames, whoever waited longer
        assert len(out) == len(outputs[0])
        assert all(np.array_equal(a.image, b.image) for a, b in zip(out, outputs[0],
                                                                     strict=True))
    assert in_flight(stack, stage) == 0


@pytest.mark.parametrize("stage", ["lipsync", "restore"])
def test_busy_until_the_deadline_is_a_clear_failure(one_stream, stage, photo, face,
                                                    demo_face, speech):
    stack = one_stream
    holder = Holder(stack, stage, demo_face, speech)
    try:
        started = time.monotonic()
        call = caller(stack, stage, photo, face, demo_face, speech, started + 1.0,
                      max_attempts=5)
        with pytest.raises(StageFailed) as info:
            call()
        elapsed = time.monotonic() - started
    finally:
        holder.release()
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "deadline" in str(info.value)
    assert 1.0 <= elapsed < 4.0, elapsed


def test_backoff_grows_with_jitter_and_stops_at_the_deadline():
    backoff = BusyBackoff(time.monotonic() + 3600, base=0.2, cap=5.0)
    delays = []
    for _ in range(8):
        delays.append(backoff.next_delay())
        backoff.waits += 1
    for n, d in enumerate(delays):
        step = min(5.0, 0.2 * 2**n)
        assert step / 2 <= d <= step
    assert len({round(d, 6) for d in delays}) == len(delays)
    assert BusyBackoff(time.monotonic() - 1).next_delay() is None
    near = BusyBackoff(time.monotonic() + 0.05, base=10, cap=10)
    assert near.next_delay() <= 0.05


def test_a_turned_away_stream_is_sent_again_whole():
    """The input a refused call had already read is sent again first, then the rest; the
    refused call's reader takes nothing more; once answered nothing is kept."""
    from talkinghead.orchestrator.stage_clients import _Replay

    replay = _Replay(iter(range(10)))
    first = replay.attempt()
    assert [next(first) for _ in range(3)] == [0, 1, 2]  # read ahead, then refused
    second = replay.attempt()
    assert list(first) == []  # the refused call's reader is stopped
    assert [next(second) for _ in range(5)] == [0, 1, 2, 3, 4]
    third = replay.attempt()
    assert next(third) == 0
    replay.accepted()
    assert list(third) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert not replay.replayable
    limited = _Replay(iter(range(10)), limit=4)
    assert list(limited.attempt()) == list(range(10))
    assert not limited.replayable  # too much read without an answer: cannot be replayed


@pytest.mark.e2e
def test_jobs_on_single_stream_servers_need_no_retries(one_stream, redis_url, assets_dir,
                                                       demo_face, demo_card, tmp_path):
    """Two workers, four jobs at once, every server at one stream, and no job retries
    allowed (TALKINGHEAD_MAX_RETRIES=0): jobs collide, wait for capacity, and all succeed
    in their first attempt."""
    from talkinghead.orchestrator.celery_app import make_app
    from tests.celery_jobs import job

    stack = one_stream
    env = {"TALKINGHEAD_BROKER_URL": redis_url, "TALKINGHEAD_RESULT_BACKEND": redis_url,
           "TALKINGHEAD_MAX_RETRIES": "0"}
    before = {s: turned_away(stack, s) for s in ("motion", "lipsync", "restore")}
    workers = [stack.start_worker(f"worker-busy-{i}", env, "--queues", "busy-test")
               for i in range(2)]
    app = make_app(redis_url, redis_url)
    try:
        results = [app.send_task("talkinghead.render", queue="busy-test", task_id=f"busy-{i}",
                                 args=[job(assets_dir, demo_face, demo_card,
                                           tmp_path / f"busy-{i}.mp4", job_id=f"busy-{i}")])
                   for i in range(4)]
        wait_until(lambda: all(r.state in ("SUCCESS", "FAILURE") for r in results), 300,
                   "the four jobs to end", poll=0.2)
        assert [r.state for r in results] == ["SUCCESS"] * 4, [r.result for r in results]
    finally:
        for worker in workers:
            worker.stop()
            stack.processes.remove(worker)
    collisions = sum(turned_away(stack, s) - before[s] for s in before)
    assert collisions > 0  # they did collide, and waited
    logs = "".join(w.log_path.read_text() for w in workers)
    assert "transient failure" not in logs
    assert logs.count("job received") == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"busy-{i}.mp4" for i in range(4)]
