"""Every numeric request field has a documented range that each real server enforces (#14).

Lite servers as real processes, raw gRPC stubs (no client-side checks in the way): a value
out of range, at either end, is refused at once with INVALID_ARGUMENT naming the field and
its range; the ends themselves and the documented "0 / unset" cases are served.
"""

from __future__ import annotations

import math
import subprocess
import time

import grpc
import numpy as np
import pytest

from talkinghead.local_stack import LocalStack, cli_command
from talkinghead.orchestrator.jobspec import RenderOptions
from talkinghead.orchestrator.stage_clients import open_channel
from talkinghead.services.common import option_ranges as ranges
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.common.wire import frame_to_proto
from talkinghead.v1 import (
    frames_pb2,
    lipsync_pb2,
    lipsync_pb2_grpc,
    motion_pb2,
    motion_pb2_grpc,
    restore_pb2,
    restore_pb2_grpc,
)

NAN, INF = math.nan, math.inf
REFUSED_WITHIN_S = 5.0  # a refusal comes before any work (the fps 1e9 case took minutes)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("option-limits"), engine="lite") as s:
        yield s


@pytest.fixture(scope="module")
def photo_bytes(demo_face) -> bytes:
    return demo_face.read_bytes()


@pytest.fixture(scope="module")
def close_up_bytes(photo, face) -> bytes:
    """The demo photo cut to the head, so its face is still found at 128 px."""
    from talkinghead.services.common.wire import encode_png

    x0, y0, x1, y1 = (int(v) for v in face.box)
    margin = (x1 - x0) // 3
    return encode_png(photo[max(0, y0 - margin):y1 + margin, max(0, x0 - margin):x1 + margin])


@pytest.fixture(scope="module")
def small_frame(photo) -> frames_pb2.Frame:
    return frame_to_proto(VideoFrame(0, np.ascontiguousarray(photo[::4, ::4])))


def refused(call) -> grpc.RpcError:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert time.monotonic() - started < REFUSED_WITHIN_S
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return info.value


def animate_request(photo_bytes: bytes, chunk_frames: int = 0, **options) -> motion_pb2.AnimateRequest:
    return motion_pb2.AnimateRequest(
        image=photo_bytes, template_name="talking",
        options=motion_pb2.MotionOptions(**options), chunk_frames=chunk_frames,
    )


MOTION_OUT_OF_RANGE = [
    # (field named in the error, range text, request fields)
    ("options.fps", "10..60", {"fps": 9.99}),
    ("options.fps", "10..60", {"fps": -5.0}),
    ("options.fps", "10..60", {"fps": 60.01}),
    ("options.fps", "10..60", {"fps": 100000.0}),
    ("options.fps", "10..60", {"fps": 1e9}),
    ("options.fps", "10..60", {"fps": NAN}),
    ("options.fps", "10..60", {"fps": INF}),
    ("options.max_side", "128..4096", {"max_side": 1}),
    ("options.max_side", "128..4096", {"max_side": 127}),
    ("options.max_side", "128..4096", {"max_side": 4097}),
    ("options.max_side", "128..4096", {"max_side": 2**32 - 1}),
    ("options.expression_multiplier", "0..3", {"expression_multiplier": -0.01}),
    ("options.expression_multiplier", "0..3", {"expression_multiplier": 3.01}),
    ("options.expression_multiplier", "0..3", {"expression_multiplier": NAN}),
    ("options.driving_multiplier", "0..3", {"driving_multiplier": -0.01}),
    ("options.driving_multiplier", "0..3", {"driving_multiplier": 3.01}),
    ("options.driving_multiplier", "0..3", {"driving_multiplier": NAN}),
    ("chunk_frames", "1..256", {"chunk_frames": 257}),
    ("chunk_frames", "1..256", {"chunk_frames": 2**32 - 1}),
]


@pytest.mark.parametrize(("field", "span", "values"), MOTION_OUT_OF_RANGE,
                         ids=[f"{f}={v}" for f, _, v in MOTION_OUT_OF_RANGE])
def test_motion_refuses_out_of_range(stack, photo_bytes, field, span, values):
    channel = open_channel(stack.targets.motion)
    stub = motion_pb2_grpc.MotionServiceStub(channel)
    try:
        error = refused(lambda: list(stub.Animate(animate_request(photo_bytes, **values),
                                                  timeout=30)))
    finally:
        channel.close()
    assert f"{field} must be within {span}" in error.details()


@pytest.mark.parametrize(
    ("image", "values", "fps", "total", "side"),
    [
        ("close_up", {"fps": 10.0, "max_side": 128, "expression_multiplier": 0.0,
                      "chunk_frames": 1}, 10, 50, 128),
        ("photo", {"fps": 60.0, "max_side": 4096, "expression_multiplier": 3.0,
                   "chunk_frames": 256}, 60, 300, 512),
        ("photo", {}, 20, 100, 512),  # unset: the template's 20 fps, 1024 px, expression 1.0
    ],
    ids=["low-ends", "high-ends", "unset"],
)
def test_motion_serves_the_ends_and_unset(stack, photo_bytes, close_up_bytes, image, values,
                                          fps, total, side):
    """The ends of each range are served (first message read, then the call cancelled)."""
    data = close_up_bytes if image == "close_up" else photo_bytes
    channel = open_channel(stack.targets.motion)
    stub = motion_pb2_grpc.MotionServiceStub(channel)
    call = stub.Animate(animate_request(data, **values), timeout=60)
    try:
        first = next(call)
    finally:
        call.cancel()
        channel.close()
    assert first.fps == fps and first.total_frames == total
    frame = first.frames[0]
    assert max(frame.width, frame.height) == side  # a photo is scaled down, never up
    chunk = values.get("chunk_frames", 8)
    if chunk <= 8:
        assert len(first.frames) == chunk
    else:  # 256 frames of 512x512 RGB pass the 64 MiB message limit: as many as fit
        assert 8 < len(first.frames) < chunk


def sync_requests(fps: float, frame: frames_pb2.Frame):
    pcm = np.zeros(16000, np.int16).tobytes()
    config = lipsync_pb2.SyncConfig(audio=frames_pb2.Audio(pcm_s16le_16k_mono=pcm), fps=fps,
                                    pass_through_faceless=True)
    return iter([lipsync_pb2.SyncRequest(config=config, frames=[frame])])


@pytest.mark.parametrize("fps", [0.0, -5.0, 9.99, 60.01, 1e9, NAN, INF])
def test_lipsync_refuses_out_of_range_fps(stack, small_frame, fps):
    channel = open_channel(stack.targets.lipsync)
    stub = lipsync_pb2_grpc.LipSyncServiceStub(channel)
    try:
        error = refused(lambda: list(stub.Sync(sync_requests(fps, small_frame), timeout=30)))
    finally:
        channel.close()
    assert "config.fps must be within 10..60" in error.details()


@pytest.mark.parametrize("fps", [10.0, 60.0])
def test_lipsync_serves_the_ends(stack, small_frame, fps):
    channel = open_channel(stack.targets.lipsync)
    stub = lipsync_pb2_grpc.LipSyncServiceStub(channel)
    try:
        replies = list(stub.Sync(sync_requests(fps, small_frame), timeout=60))
    finally:
        channel.close()
    assert [f.index for r in replies for f in r.frames] == [0]


def restore_requests(frame: frames_pb2.Frame, weight: float | None):
    config = restore_pb2.RestoreConfig() if weight is None else restore_pb2.RestoreConfig(
        weight=weight)
    return iter([restore_pb2.RestoreRequest(config=config, frames=[frame])])


@pytest.mark.parametrize("weight", [-0.01, 1.01, -1e9, NAN, INF])
def test_restore_refuses_out_of_range_weight(stack, small_frame, weight):
    channel = open_channel(stack.targets.restore[0])
    stub = restore_pb2_grpc.RestoreServiceStub(channel)
    try:
        error = refused(lambda: list(stub.Restore(restore_requests(small_frame, weight),
                                                  timeout=30)))
    finally:
        channel.close()
    assert "config.weight must be within 0..1" in error.details()


@pytest.mark.parametrize("weight", [0.0, 1.0, None])
def test_restore_serves_the_ends_and_unset(stack, small_frame, weight):
    channel = open_channel(stack.targets.restore[0])
    stub = restore_pb2_grpc.RestoreServiceStub(channel)
    try:
        replies = list(stub.Restore(restore_requests(small_frame, weight), timeout=60))
    finally:
        channel.close()
    assert [f.index for r in replies for f in r.frames] == [0]


GOOD_BOX = {"x0": 20.0, "y0": 20.0, "x1": 100.0, "y1": 100.0}  # inside the 128x128 frame
GEOMETRY_OUT_OF_RANGE = [
    # (words in the error, FaceGeometry fields); the frame is 128x128
    ("face.box.x0 must be within -128..256", {"box": {**GOOD_BOX, "x0": NAN}}),
    ("face.box.x0 must be within -128..256", {"box": {**GOOD_BOX, "x0": -1e30}}),
    ("face.box.y1 must be within -128..256", {"box": {**GOOD_BOX, "y1": 1e30}}),
    ("face.box.x1 must be within -128..256", {"box": {**GOOD_BOX, "x1": 257.0}}),
    ("face.box must have x0 < x1 and y0 < y1", {"box": {**GOOD_BOX, "x0": 100.0, "x1": 20.0}}),
    ("face.box must have x0 < x1 and y0 < y1", {}),  # face set, box left empty
    ("face.landmarks must hold 0 or 5 points", {"box": GOOD_BOX, "landmarks": [{"x": 50, "y": 50}] * 3}),
    ("face.landmarks[2].y must be within -128..256",
     {"box": GOOD_BOX, "landmarks": [{"x": 50, "y": 50}] * 2 + [{"x": 50, "y": NAN}] * 3}),
    ("face.crop_transform must hold 0 or 6 values", {"box": GOOD_BOX, "crop_transform": [1, 0, 0]}),
    ("face.crop_transform[5] must be within -1e+06..1e+06",
     {"box": GOOD_BOX, "crop_transform": [1, 0, 0, 0, 1, INF]}),
    ("face.crop_size must be within 0..4096", {"box": GOOD_BOX, "crop_size": 4097}),
    ("face.clip_key must be at most 64 characters", {"box": GOOD_BOX, "clip_key": "a" * 65}),
    ("face.clip_key must be at most 64 characters", {"box": GOOD_BOX, "clip_key": "a/b"}),
    ("face.clip_frame must be within 0..1e+06", {"box": GOOD_BOX, "clip_frame": 1_000_001}),
]


def frame_with_geometry(photo, geometry: dict) -> frames_pb2.Frame:
    frame = frame_to_proto(VideoFrame(7, np.ascontiguousarray(photo[::4, ::4])))  # 128x128
    frame.face.CopyFrom(frames_pb2.FaceGeometry())
    frame.face.MergeFrom(frames_pb2.FaceGeometry(
        box=frames_pb2.Box(**geometry.get("box", {})),
        landmarks=[frames_pb2.Point(**p) for p in geometry.get("landmarks", [])],
        crop_transform=geometry.get("crop_transform", []),
        crop_size=geometry.get("crop_size", 0),
        clip_key=geometry.get("clip_key", ""),
        clip_frame=geometry.get("clip_frame", 0),
    ))
    return frame


@pytest.mark.parametrize(("words", "geometry"), GEOMETRY_OUT_OF_RANGE,
                         ids=[w.split(" must")[0] + f"-{i}"
                              for i, (w, _) in enumerate(GEOMETRY_OUT_OF_RANGE)])
@pytest.mark.parametrize("stage", ["lipsync", "restore"])
def test_face_geometry_out_of_range_is_refused(stack, photo, stage, words, geometry):
    """Numbers in a frame's face geometry (they gave INTERNAL: NaN, 1e30, 3 landmarks)."""
    frame = frame_with_geometry(photo, geometry)
    if stage == "lipsync":
        channel = open_channel(stack.targets.lipsync)
        stub = lipsync_pb2_grpc.LipSyncServiceStub(channel)
        call = lambda: list(stub.Sync(sync_requests(25.0, frame), timeout=30))  # noqa: E731
    else:
        channel = open_channel(stack.targets.restore[0])
        stub = restore_pb2_grpc.RestoreServiceStub(channel)
        call = lambda: list(stub.Restore(restore_requests(frame, None), timeout=30))  # noqa: E731
    try:
        error = refused(call)
    finally:
        channel.close()
    assert f"frame 7: {words}" in error.details()


def test_the_motion_servers_geometry_is_accepted(stack, photo_bytes):
    """What the motion stage sends on is within the ranges the next stages enforce."""
    channel = open_channel(stack.targets.motion)
    stub = motion_pb2_grpc.MotionServiceStub(channel)
    try:
        replies = list(stub.Animate(animate_request(photo_bytes, fps=10.0, chunk_frames=25),
                                    timeout=120))
    finally:
        channel.close()
    frames = [f for r in replies for f in r.frames]
    assert len(frames) == 50 and all(f.HasField("face") for f in frames)
    for f in frames:
        ranges.check_face_geometry(f, f.width, f.height)
    restore = open_channel(stack.targets.restore[0])
    try:
        out = list(restore_pb2_grpc.RestoreServiceStub(restore).Restore(
            iter([restore_pb2.RestoreRequest(frames=frames[:2])]), timeout=60))
    finally:
        restore.close()
    assert [f.index for r in out for f in r.frames] == [0, 1]


def field_bounds(model, name: str) -> tuple[float, float]:
    import typing

    info = model.model_fields[name]
    meta = list(info.metadata)
    # a number-or-word field (expression_multiplier: a number or "auto"): the number's bounds
    for arg in typing.get_args(info.annotation):
        for inner in typing.get_args(arg)[1:]:
            meta.extend(getattr(inner, "metadata", [inner]))
    low = next(m.ge for m in meta if hasattr(m, "ge"))
    high = next(m.le for m in meta if hasattr(m, "le"))
    return low, high


@pytest.mark.parametrize(
    ("job_field", "server_range"),
    [
        ("fps", ranges.MOTION_FPS),
        ("fps", ranges.LIPSYNC_FPS),
        ("max_side", ranges.MOTION_MAX_SIDE),
        ("expression_multiplier", ranges.MOTION_EXPRESSION_MULTIPLIER),
        ("driving_multiplier", ranges.MOTION_DRIVING_MULTIPLIER),
        ("restore_weight", ranges.RESTORE_WEIGHT),
    ],
)
def test_servers_and_job_spec_state_the_same_ranges(job_field, server_range):
    """What the job spec accepts, every server accepts, and no more."""
    assert field_bounds(RenderOptions, job_field) == (server_range.low, server_range.high)


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--max-streams", "0"], "--max-streams must be within 1..1024; got 0"),
        (["--max-streams", "1025"], "--max-streams must be within 1..1024; got 1025"),
        (["--batch-size", "0"], "--batch-size must be within 1..1024; got 0"),
        (["--batch-size", "100000"], "--batch-size must be within 1..1024; got 100000"),
        (["--max-message-mb", "0"], "--max-message-mb must be within 1..2047; got 0"),
        (["--max-message-mb", "4096"], "--max-message-mb must be within 1..2047; got 4096"),
        (["--grace", "-1"], "--grace must be within 0..86400; got -1"),
        (["--grace", "nan"], "--grace must be within 0..86400; got nan"),
        (["--port", "70000"], "--port must be within 0..65535; got 70000"),
        (["--port", "65000"], "--metrics-port (default: port + 1000) must be within 0..65535"),
        (["--threads", "-1"], "--threads must be within 0..1024 (0: torch's choice); got -1"),
        (["--threads", "5000"], "--threads must be within 0..1024 (0: torch's choice); got 5000"),
        (["--paste-mask-cache-mb", "-1"],
         "--paste-mask-cache-mb must be within 0..1048576 MiB (0: no cache); got -1"),
        (["--compile", "maybe"], "argument --compile: invalid choice: 'maybe'"),
    ],
)
def test_server_flags_out_of_range_stop_the_server_at_once(flags, words):
    """The numbers an operator gives `talkinghead serve` are checked before it starts (they
    were taken as given: --max-streams 0 made a server that refuses every call)."""
    done = subprocess.run(cli_command("serve", "restore", "--engine", "lite", *flags),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"error: {words}" in done.stderr
