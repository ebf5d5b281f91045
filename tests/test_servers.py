"""The three model servers as real processes on loopback: contract, status codes, limits."""

from __future__ import annotations

import ipaddress
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from talkinghead.local_stack import LocalStack, free_port
from talkinghead.orchestrator.stage_clients import (
    LipSyncClient,
    MotionClient,
    RestoreClient,
    StageFailed,
    open_channel,
    wait_for_serving,
)
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.motion.options import MotionOptions
from talkinghead.v1 import frames_pb2, lipsync_pb2, lipsync_pb2_grpc, motion_pb2, motion_pb2_grpc


def list_services(target: str) -> set[str]:
    channel = open_channel(target)
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    channel.close()
    return {s.name for s in replies[0].list_services_response.service}


def test_reflection_lists_each_service_with_health(lite_stack):
    t = lite_stack.targets
    expected = {
        t.motion: "talkinghead.v1.MotionService",
        t.lipsync: "talkinghead.v1.LipSyncService",
        t.restore[0]: "talkinghead.v1.RestoreService",
    }
    for target, service in expected.items():
        names = list_services(target)
        assert service in names
        assert "grpc.health.v1.Health" in names


def test_health_is_serving_per_service(lite_stack):
    channel = open_channel(lite_stack.targets.motion)
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "talkinghead.v1.MotionService"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    channel.close()


def test_motion_streams_the_whole_clip_with_geometry(lite_stack, demo_face):
    client = MotionClient(lite_stack.targets.motion, "test-motion")
    frames, header = client.animate(demo_face.read_bytes(), "talking", MotionOptions(fps=25))
    client.close()
    assert header.total_frames == len(frames) == 125  # 100 frames at 20 fps → 5 s at 25 fps
    assert header.engine.name == "lite"
    assert [f.index for f in frames] == list(range(125))
    assert frames[0].image.shape == (512, 512, 3)
    boxes = np.array([f.face.box for f in frames])
    assert np.all(boxes[:, 2] > boxes[:, 0])
    assert boxes[:, 0].std() > 0.5  # the face moves with the template
    # the head moves, so frames differ
    assert np.abs(frames[0].image.astype(int) - frames[60].image.astype(int)).mean() > 0.5


def test_list_templates(lite_stack):
    client = MotionClient(lite_stack.targets.motion)
    names = {t.name: t for t in client.list_templates()}
    client.close()
    assert names["talking"].frames == 100 and names["talking"].fps == 20


@pytest.mark.parametrize(
    ("image", "template", "code", "words"),
    [
        ("not_image.jpg", "talking", grpc.StatusCode.INVALID_ARGUMENT, "not a decodable image"),
        ("no_face.png", "talking", grpc.StatusCode.INVALID_ARGUMENT, "no face"),
        ("face", "moonwalk", grpc.StatusCode.NOT_FOUND, "unknown template 'moonwalk'"),
    ],
)
def test_motion_bad_input_codes(lite_stack, assets_dir, demo_face, image, template, code, words):
    data = demo_face.read_bytes() if image == "face" else (assets_dir / image).read_bytes()
    client = MotionClient(lite_stack.targets.motion)
    with pytest.raises(StageFailed) as info:
        client.animate(data, template, MotionOptions(fps=25))
    client.close()
    assert info.value.code == code
    assert words in info.value.details


def still_frames(face, n, fps=25.0):
    import cv2

    image = cv2.cvtColor(cv2.imread(str(face)), cv2.COLOR_BGR2RGB)
    return [VideoFrame(i, image) for i in range(n)]


@pytest.mark.parametrize(
    ("audio", "words"),
    [
        ("empty.wav", "audio is empty"),
        ("not_audio.wav", "not decodable audio"),
    ],
)
def test_lipsync_bad_audio(lite_stack, assets_dir, demo_face, audio, words):
    client = LipSyncClient(lite_stack.targets.lipsync)
    with pytest.raises(StageFailed) as info:
        list(client.sync(still_frames(demo_face, 3), (assets_dir / audio).read_bytes(), 25.0))
    client.close()
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert words in info.value.details


def test_lipsync_audio_over_the_limit(tmp_path, assets_dir, demo_face):
    """A server started with a 5 s limit refuses 12 s of audio, naming the limit."""
    stack = LocalStack(tmp_path, engine="lite")
    port = free_port()
    import os

    os.environ["TALKINGHEAD_MAX_AUDIO_SECONDS"] = "5"
    try:
        stack.start_server("lipsync", port, "lipsync-5s")
    finally:
        del os.environ["TALKINGHEAD_MAX_AUDIO_SECONDS"]
    try:
        target = f"127.0.0.1:{port}"
        channel = open_channel(target)
        wait_for_serving(channel, "lipsync", target, 60)
        client = LipSyncClient(target)
        with pytest.raises(StageFailed) as info:
            list(client.sync(still_frames(demo_face, 2), (assets_dir / "long.wav").read_bytes(), 25.0))
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "longer than the 5 s limit" in info.value.details
    finally:
        stack.stop()


def test_lipsync_and_restore_keep_order_and_indices(lite_stack, assets_dir, demo_face):
    frames = still_frames(demo_face, 20)
    client = LipSyncClient(lite_stack.targets.lipsync)
    synced = list(client.sync(frames, (assets_dir / "speech_3s.wav").read_bytes(), 25.0))
    client.close()
    assert [f.index for f in synced] == list(range(20))
    restorer = RestoreClient(lite_stack.targets.restore[0])
    restored = restorer.restore(synced, 0.5)
    restorer.close()
    assert [f.index for f in restored] == list(range(20))
    assert restored[0].image.shape == frames[0].image.shape


def test_frame_with_wrong_byte_count_is_named(lite_stack):
    channel = open_channel(lite_stack.targets.lipsync)
    stub = lipsync_pb2_grpc.LipSyncServiceStub(channel)
    bad = frames_pb2.Frame(index=7, width=4, height=4, format=frames_pb2.PIXEL_FORMAT_RGB24,
                           data=b"\0" * 10)
    pcm = (np.zeros(16000, np.int16)).tobytes()
    requests = iter([
        lipsync_pb2.SyncRequest(config=lipsync_pb2.SyncConfig(
            audio=frames_pb2.Audio(pcm_s16le_16k_mono=pcm), fps=25)),
        lipsync_pb2.SyncRequest(frames=[bad]),
    ])
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Sync(requests, timeout=10))
    channel.close()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "frame 7" in info.value.details()


def test_deadline_is_honoured(lite_stack, demo_face):
    channel = open_channel(lite_stack.targets.motion)
    stub = motion_pb2_grpc.MotionServiceStub(channel)
    request = motion_pb2.AnimateRequest(image=demo_face.read_bytes(), template_name="talking")
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Animate(request, timeout=0.01))
    channel.close()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_stream_limit_gives_resource_exhausted_and_metrics(tmp_path, demo_face):
    """--max-streams 1: a second concurrent stream is refused cleanly, marked busy (the
    client waits for capacity until its deadline, then says so); metrics count it."""
    stack = LocalStack(tmp_path, engine="lite", with_metrics=True)
    port = stack.start_server("lipsync", 0, "lipsync-1", "--max-streams", "1").port
    metrics_port = stack.metrics_ports["lipsync-1"]
    target = f"127.0.0.1:{port}"
    try:
        channel = open_channel(target)
        wait_for_serving(channel, "lipsync", target, 60)
        stub = lipsync_pb2_grpc.LipSyncServiceStub(channel)
        release = threading.Event()
        pcm = np.zeros(16000, np.int16).tobytes()

        def held_open():
            yield lipsync_pb2.SyncRequest(config=lipsync_pb2.SyncConfig(
                audio=frames_pb2.Audio(pcm_s16le_16k_mono=pcm), fps=25))
            release.wait(20)

        first = stub.Sync(held_open(), timeout=30)
        time.sleep(0.5)  # the first stream now holds the only slot
        client = LipSyncClient(target)
        with pytest.raises(StageFailed) as info:
            list(client.sync(still_frames(demo_face, 1), pcm, 25.0,
                             busy_deadline=time.monotonic() + 1.0))
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and info.value.busy
        assert "1 streams in progress (its limit)" in info.value.details
        assert "still busy at the job's deadline" in info.value.details
        waits = client.busy.total_waits
        assert waits >= 1
        release.set()
        assert list(first) == []
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
        refused = b'talkinghead_requests_total{code="RESOURCE_EXHAUSTED",method="Sync",stage="lipsync"}'
        assert refused + f" {waits + 1}.0".encode() in text  # every call turned away, counted
        assert b'talkinghead_ready{engine="lite",stage="lipsync"} 1.0' in text
        channel.close()
    finally:
        stack.stop()


def test_sigterm_drains_in_flight_stream(tmp_path, demo_face):
    """SIGTERM: health turns NOT_SERVING at once, the stream in flight still completes."""
    stack = LocalStack(tmp_path, engine="lite")
    proc = stack.start_server("restore", 0, "restore-drain")
    port = proc.port
    target = f"127.0.0.1:{port}"
    try:
        channel = open_channel(target)
        wait_for_serving(channel, "restore", target, 60)
        client = RestoreClient(target)
        frames = still_frames(demo_face, 4)
        from talkinghead.v1 import restore_pb2, restore_pb2_grpc

        stub = restore_pb2_grpc.RestoreServiceStub(channel)
        gate = threading.Event()

        def slow_requests():
            from talkinghead.services.common.wire import frame_to_proto

            yield restore_pb2.RestoreRequest(frames=[frame_to_proto(frames[0])])
            gate.wait(10)
            yield restore_pb2.RestoreRequest(frames=[frame_to_proto(f) for f in frames[1:]])

        call = stub.Restore(slow_requests(), timeout=30)
        first = next(call)
        proc.popen.send_signal(signal.SIGTERM)
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline:
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
            if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            time.sleep(0.1)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(StageFailed) as refused:
            client.restore(frames[:1])
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        gate.set()
        rest = list(call)
        assert len(first.frames) + sum(len(r.frames) for r in rest) == 4
        assert proc.popen.wait(20) == 0
        channel.close()
    finally:
        stack.stop()


def listening_addresses(port: int) -> set[str]:
    """Local addresses of TCP sockets listening on ``port``, from the kernel's own table
    (/proc/net/tcp and tcp6, what ``ss -ltn`` reads): no system tool needed."""
    addresses = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():  # no IPv6 in this kernel
            continue
        for line in table.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address_hex)  # 32-bit words in host byte order
            if sys.byteorder == "little":
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            address = ipaddress.ip_address(raw)
            mapped = getattr(address, "ipv4_mapped", None)
            addresses.add(f"::ffff:{mapped}" if mapped else str(address))
    return addresses


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(),
                    reason="reads the kernel's socket table from /proc/net (Linux)")
def test_servers_bind_loopback_only(lite_stack):
    """Every server listens on IPv4 loopback only (possibly as an IPv4-mapped IPv6
    address), never on a wildcard or outside address."""
    targets = [lite_stack.targets.motion, lite_stack.targets.lipsync,
               *lite_stack.targets.restore]
    for target in targets:
        hosts = listening_addresses(int(target.rsplit(":", 1)[1]))
        assert hosts and hosts <= {"127.0.0.1", "::ffff:127.0.0.1"}, (target, hosts)


def huge_png(width: int, height: int) -> bytes:
    """A few kB of PNG whose header claims width x height (a decompression bomb)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_oversized_photo_refused_from_its_header(lite_stack):
    """A 50 MP photo (over the 40 MP limit) is refused by its header, before decoding."""
    data = huge_png(10_000, 5_000)
    assert len(data) < 200_000
    client = MotionClient(lite_stack.targets.motion)
    with pytest.raises(StageFailed) as info:
        client.animate(data, "talking", MotionOptions(fps=25))
    client.close()
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "10000x5000 pixels, more than the 40000000 allowed" in info.value.details


def test_message_size_limit(tmp_path, demo_face):
    """--max-message-mb 1: a 2 MB request is refused with RESOURCE_EXHAUSTED; the server stays
    up and serves the next request."""
    stack = LocalStack(tmp_path, engine="lite")
    port = stack.start_server("motion", 0, "motion-small", "--max-message-mb", "1").port
    target = f"127.0.0.1:{port}"
    try:
        channel = open_channel(target)
        wait_for_serving(channel, "motion", target, 60)
        channel.close()
        client = MotionClient(target)
        with pytest.raises(StageFailed) as info:
            client.animate(b"\xff" * (2 << 20), "talking", MotionOptions(fps=25))
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in info.value.details
        assert not info.value.busy  # no wait cures it: refused at once, not waited for
        assert client.busy is not None and client.busy.total_waits == 0
        clip, _ = client.animate(demo_face.read_bytes(), "talking",
                                 MotionOptions(fps=25, max_side=256))
        assert len(clip) > 0
        client.close()
    finally:
        stack.stop()


def test_frame_batches_respect_the_message_limit():
    from talkinghead.services.common.errors import InputError
    from talkinghead.services.common.wire import (
        MESSAGE_HEADROOM_BYTES,
        frame_batches,
        frame_to_proto,
    )

    frames = [frame_to_proto(VideoFrame(i, np.zeros((256, 256, 3), np.uint8))) for i in range(10)]
    one = max(f.ByteSize() for f in frames) + 16
    limit = MESSAGE_HEADROOM_BYTES + 3 * one  # room for three frames per message
    batches = list(frame_batches(frames, limit, max_frames=8))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert [f.index for b in batches for f in b] == list(range(10))
    assert [len(b) for b in frame_batches(frames, 1 << 26, max_frames=4)] == [4, 4, 2]
    with pytest.raises(InputError, match="frame 0 .256x256. takes"):
        list(frame_batches(frames, MESSAGE_HEADROOM_BYTES + one // 2))
