"""Health List and the status a call is counted under, on real servers (#14, "Also seen").

* ``grpc.health.v1.Health/List`` (listed by reflection) answers every service's status
  instead of UNIMPLEMENTED;
* ``talkinghead_requests_total`` counts a call the client cancelled as CANCELLED and one
  whose deadline passed as DEADLINE_EXCEEDED (they were counted as OK, or INTERNAL for a
  request stream), whichever way gRPC noticed it: while the server was sending (response
  stream) or while it was reading the client's stream (request stream).
"""

from __future__ import annotations

import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from talkinghead.local_stack import LocalStack
from talkinghead.orchestrator.stage_clients import open_channel, wait_for_serving
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.common.wire import frame_to_proto
from talkinghead.v1 import motion_pb2, motion_pb2_grpc, restore_pb2, restore_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Deadline of the calls meant to run out of time: long enough for the first response even
# on a loaded machine (the test reads it before letting the deadline pass).
DEADLINE_S = 8.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("health-metrics"), engine="lite",
                    with_metrics=True) as s:
        yield s


def requests_total(port: int, stage: str, method: str) -> dict[str, float]:
    """talkinghead_requests_total of one method, by status code."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "talkinghead_requests_total"
                    and sample.labels.get("stage") == stage
                    and sample.labels.get("method") == method):
                counts[sample.labels["code"]] = sample.value
    return counts


def wait_for_count(port: int, stage: str, method: str, code: str, at_least: float,
                   timeout: float = 20.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        counts = requests_total(port, stage, method)
        if counts.get(code, 0) >= at_least or time.monotonic() > deadline:
            return counts
        time.sleep(0.1)


def health_list(target: str) -> dict[str, int]:
    channel = open_channel(target)
    try:
        reply = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(),
                                                        timeout=5)
    finally:
        channel.close()
    return {name: response.status for name, response in reply.statuses.items()}


def test_health_list_answers_every_service(stack):
    expected = {
        stack.targets.motion: "talkinghead.v1.MotionService",
        stack.targets.lipsync: "talkinghead.v1.LipSyncService",
        stack.targets.restore[0]: "talkinghead.v1.RestoreService",
    }
    for target, service in expected.items():
        assert health_list(target) == {"": SERVING, service: SERVING}


def test_health_list_says_not_serving_without_weights(tmp_path):
    """A server whose weights are missing stays up NOT_SERVING; List says so for each name."""
    stack = LocalStack(tmp_path / "logs", engine="lite")
    empty = tmp_path / "no-weights"
    empty.mkdir()
    proc = stack.start_server("restore", 0, "restore-no-weights", "--engine", "gfpgan",
                              "--weights", str(empty))
    target = f"127.0.0.1:{proc.port}"
    try:
        deadline = time.monotonic() + 60
        while "engine unavailable" not in proc.log_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "engine unavailable" in proc.log_text(), proc.log_tail()
        assert health_list(target) == {"": NOT_SERVING, "talkinghead.v1.RestoreService": NOT_SERVING}
    finally:
        stack.stop()


def animate(stack, photo_bytes: bytes, timeout: float):
    channel = open_channel(stack.targets.motion)
    stub = motion_pb2_grpc.MotionServiceStub(channel)
    request = motion_pb2.AnimateRequest(
        image=photo_bytes, template_name="talking",
        options=motion_pb2.MotionOptions(fps=60), chunk_frames=1)  # 300 messages
    return channel, stub.Animate(request, timeout=timeout)


def test_cancelled_response_stream_counts_as_cancelled(stack, demo_face):
    port = stack.metrics_ports["motion"]
    before = requests_total(port, "motion", "Animate")
    channel, call = animate(stack, demo_face.read_bytes(), timeout=60)
    next(call)
    call.cancel()
    after = wait_for_count(port, "motion", "Animate", "CANCELLED",
                           before.get("CANCELLED", 0) + 1)
    channel.close()
    assert after.get("CANCELLED", 0) == before.get("CANCELLED", 0) + 1, after
    assert after.get("OK", 0) == before.get("OK", 0), after
    assert after.get("INTERNAL", 0) == before.get("INTERNAL", 0), after


def test_deadline_on_response_stream_counts_as_deadline_exceeded(stack, demo_face):
    """The client reads one message then stops reading: the server is held sending until
    the deadline passes."""
    port = stack.metrics_ports["motion"]
    before = requests_total(port, "motion", "Animate")
    started = time.monotonic()
    channel, call = animate(stack, demo_face.read_bytes(), timeout=DEADLINE_S)
    next(call)
    with pytest.raises(grpc.RpcError) as info:
        time.sleep(max(0.0, started + DEADLINE_S + 1 - time.monotonic()))
        list(call)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    after = wait_for_count(port, "motion", "Animate", "DEADLINE_EXCEEDED",
                           before.get("DEADLINE_EXCEEDED", 0) + 1)
    channel.close()
    assert after.get("DEADLINE_EXCEEDED", 0) == before.get("DEADLINE_EXCEEDED", 0) + 1, after
    assert after.get("OK", 0) == before.get("OK", 0), after
    assert after.get("CANCELLED", 0) == before.get("CANCELLED", 0), after


def restore_stream(photo, release: threading.Event):
    """One frame, then the client's stream stays open (no more frames, no end) until told."""
    frame = frame_to_proto(VideoFrame(0, np.ascontiguousarray(photo[::4, ::4])))
    yield restore_pb2.RestoreRequest(config=restore_pb2.RestoreConfig(), frames=[frame])
    release.wait(30)


@pytest.mark.parametrize(("ending", "code"), [("cancel", "CANCELLED"),
                                              ("deadline", "DEADLINE_EXCEEDED")])
def test_request_stream_ended_early_is_counted_by_why(stack, photo, ending, code):
    """Restore waits for the client's next frames when the call ends: the server's request
    iterator raises; counted as CANCELLED / DEADLINE_EXCEEDED, not INTERNAL."""
    port = stack.metrics_ports["restore-0"]
    before = requests_total(port, "restore", "Restore")
    channel = open_channel(stack.targets.restore[0])
    wait_for_serving(channel, "restore", stack.targets.restore[0], 30)
    release = threading.Event()
    call = restore_pb2_grpc.RestoreServiceStub(channel).Restore(
        restore_stream(photo, release), timeout=DEADLINE_S if ending == "deadline" else 60)
    try:
        assert [f.index for f in next(call).frames] == [0]
        if ending == "cancel":
            call.cancel()
        else:
            with pytest.raises(grpc.RpcError) as info:
                list(call)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        after = wait_for_count(port, "restore", "Restore", code, before.get(code, 0) + 1)
    finally:
        release.set()
        channel.close()
    assert after.get(code, 0) == before.get(code, 0) + 1, after
    for other in {"OK", "INTERNAL", "CANCELLED", "DEADLINE_EXCEEDED"} - {code}:
        assert after.get(other, 0) == before.get(other, 0), (other, after)
