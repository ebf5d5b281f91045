"""Clients of the three model servers, in the orchestrator's terms (VideoFrame in and out).

Every call carries the job id as metadata so the servers' logs name the job. Before the
first call a client waits for the server's health to say SERVING: a server still loading
its model is waited for, not treated as down.

A server at its stream limit answers RESOURCE_EXHAUSTED before doing any work. That is
"full now", not "broken": the motion and lipsync calls wait for capacity (``BusyBackoff``:
exponential backoff with jitter, up to the job's deadline) and call again with the same
input, without counting against any retry budget. The restore fan-out does the same per
chunk (restore_fanout.py).
"""

from __future__ import annotations

import collections
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from talkinghead.services.common.audio import float_to_pcm_s16le
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.common.logs import JOB_METADATA_KEY
from talkinghead.services.common.security import client_channel
from talkinghead.services.common.server import BUSY_METADATA_KEY, DEFAULT_MAX_MESSAGE_BYTES
from talkinghead.services.common.wire import frame_batches, frame_from_proto, frame_to_proto
from talkinghead.services.motion.options import MotionOptions, options_to_proto
from talkinghead.v1 import (
    frames_pb2,
    lipsync_pb2,
    lipsync_pb2_grpc,
    motion_pb2,
    motion_pb2_grpc,
    restore_pb2,
    restore_pb2_grpc,
)

log = logging.getLogger(__name__)

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
]
FRAMES_PER_MESSAGE = 8


class StageUnavailable(RuntimeError):
    """A model server did not become SERVING in time."""


class StageFailed(RuntimeError):
    """A model server answered with an error; carries its status code."""

    def __init__(self, stage: str, code: grpc.StatusCode, details: str, busy: bool = False):
        super().__init__(f"{stage} server: {code.name}: {details}")
        self.stage, self.code, self.details = stage, code, details
        self.busy = busy  # the server was full (its stream limit), not refusing this input


def is_busy(err: grpc.RpcError) -> bool:
    """RESOURCE_EXHAUSTED from a server at its stream limit: worth waiting for. A message
    over a size limit is RESOURCE_EXHAUSTED too, from gRPC itself, and is not."""
    if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return False
    return any(key == BUSY_METADATA_KEY for key, _ in (err.trailing_metadata() or ()))


def stage_failed(stage: str, err: grpc.RpcError) -> StageFailed:
    return StageFailed(stage, err.code(), err.details() or "", busy=is_busy(err))


@dataclass(frozen=True)
class StageTargets:
    """Where the model servers listen (host:port)."""

    motion: str
    lipsync: str
    restore: tuple[str, ...]


def open_channel(target: str) -> grpc.Channel:
    """TLS and the shared token when TALKINGHEAD_TLS_CA / TALKINGHEAD_TOKEN are set."""
    return client_channel(target, CHANNEL_OPTIONS)


def wait_for_serving(
    channel: grpc.Channel, stage: str, target: str, timeout: float = 120.0
) -> None:
    """Poll the standard health service until SERVING (models can take minutes to load)."""
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        last = _health_status(stub, 2.0)
        if last == "SERVING":
            return
        time.sleep(0.25)
    raise StageUnavailable(f"{stage} server at {target} not SERVING after {timeout:g}s ({last})")


def _health_status(stub: health_pb2_grpc.HealthStub, timeout: float) -> str:
    """"SERVING", another health status name, or the error of the check."""
    try:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    except grpc.RpcError as err:
        return f"{err.code().name}: {err.details()}"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def probe_serving(target: str, timeout: float = 2.0) -> str:
    """One health check of ``target`` over a fresh channel: "SERVING" or why not.

    A fresh channel, because a channel whose server died sits in its reconnect backoff
    (up to minutes) and would report a restarted server as still down.
    """
    channel = open_channel(target)
    try:
        return _health_status(health_pb2_grpc.HealthStub(channel), timeout)
    finally:
        channel.close()


def wait_for_any_serving(
    stage: str, targets: Iterable[str], timeout: float = 120.0, poll: float = 0.25
) -> dict[str, str]:
    """Wait until at least one of ``targets`` is SERVING; every target's status then.

    For replicas of one stage (restore): a job needs one of them, not all. The result maps
    each target to "SERVING" or why it is not (the caller logs the ones that are out).
    Raises StageUnavailable when none is SERVING within ``timeout``.
    """
    targets = list(dict.fromkeys(targets))
    channels = {t: open_channel(t) for t in targets}
    stubs = {t: health_pb2_grpc.HealthStub(c) for t, c in channels.items()}
    deadline = time.monotonic() + timeout
    try:
        while True:
            futures = {
                t: stub.Check.future(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
                for t, stub in stubs.items()
            }
            status: dict[str, str] = {}
            for t, future in futures.items():
                try:
                    reply = future.result()
                    status[t] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                except grpc.RpcError as err:
                    status[t] = f"{err.code().name}: {err.details()}"
            if any(s == "SERVING" for s in status.values()):
                return status
            if time.monotonic() >= deadline:
                raise StageUnavailable(
                    f"no {stage} server SERVING after {timeout:g}s: "
                    + ", ".join(f"{t} ({s})" for t, s in status.items())
                )
            time.sleep(poll)
    finally:
        for channel in channels.values():
            channel.close()


def _env_seconds(name: str, default: float) -> float:
    return float(os.environ.get(name, str(default)))


class BusyBackoff:
    """Waiting for capacity after RESOURCE_EXHAUSTED ("full now, call again later").

    Exponential backoff with jitter (so callers turned away together do not return
    together), from ``TALKINGHEAD_BUSY_BACKOFF_BASE_SECONDS`` (default 0.2) doubling up
    to ``TALKINGHEAD_BUSY_BACKOFF_MAX_SECONDS`` (default 5), for as long as the job's
    ``deadline`` (time.monotonic()) allows; None: no deadline. Overload never uses up a
    fixed retry budget: a job waits its turn, and fails only when its own time is up.
    """

    def __init__(self, deadline: float | None, base: float | None = None,
                 cap: float | None = None):
        self.deadline = deadline
        self.base = base if base is not None else _env_seconds(
            "TALKINGHEAD_BUSY_BACKOFF_BASE_SECONDS", 0.2)
        self.cap = cap if cap is not None else _env_seconds(
            "TALKINGHEAD_BUSY_BACKOFF_MAX_SECONDS", 5.0)
        self.waits = 0  # consecutive waits since the last success
        self.total_waits = 0
        self.waited_s = 0.0

    def reset(self) -> None:
        self.waits = 0

    def next_delay(self) -> float | None:
        """The next wait (equal jitter), or None when the deadline has passed."""
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            return None
        step = min(self.cap, self.base * 2 ** min(self.waits, 30))
        delay = step / 2 + random.uniform(0.0, step / 2)
        if self.deadline is not None:
            delay = min(delay, self.deadline - now)  # one last call at the deadline
        return delay

    def wait(self, stop: Callable[[], bool] | None = None) -> bool:
        """Sleep the next delay; False (at once) when the deadline has passed or ``stop``."""
        delay = self.next_delay()
        if delay is None:
            return False
        self.waits += 1
        self.total_waits += 1
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0:
            if stop is not None and stop():
                return False
            time.sleep(min(left, 0.05))
        self.waited_s += delay
        return True

    def left(self) -> str:
        if self.deadline is None:
            return "no deadline"
        return f"{max(0.0, self.deadline - time.monotonic()):.0f} s left before the job's deadline"


def busy_failure(stage: str, err: grpc.RpcError, backoff: BusyBackoff) -> StageFailed:
    return StageFailed(
        stage, grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"{err.details() or 'server busy'} (still busy at the job's deadline, after "
        f"{backoff.total_waits} waits, {backoff.waited_s:.1f} s)", busy=True,
    )


_END = object()


class _Replay:
    """The input of a streaming call, kept until the server answers, so that a call turned
    away (RESOURCE_EXHAUSTED comes before any answer) can be made again with the same
    input. gRPC reads a request iterator ahead on its own thread: each attempt stops the
    previous one's reader before it starts, so no item is lost or sent twice. Past
    ``limit`` items without an answer nothing more is kept and the call cannot be replayed.
    """

    def __init__(self, items: Iterable, limit: int = 256):
        self._source = iter(items)
        self._kept: list = []
        self._lock = threading.Lock()
        self._keeping = True
        self._limit = limit
        self._current: dict | None = None

    @property
    def replayable(self) -> bool:
        return self._keeping

    def accepted(self) -> None:
        """The server answered: what was kept is no longer needed."""
        with self._lock:
            self._keeping = False
            self._kept = []

    def attempt(self) -> Iterator:
        with self._lock:
            if self._current is not None:
                self._current["active"] = False  # the previous reader takes nothing more
            state = {"active": True}
            self._current = state
            replay = collections.deque(self._kept)

        def items() -> Iterator:
            while True:
                with self._lock:
                    if not state["active"]:
                        return
                    if replay:
                        item = replay.popleft()
                    else:
                        item = next(self._source, _END)
                        if item is _END:
                            return
                        if self._keeping:
                            self._kept.append(item)
                            if len(self._kept) > self._limit:
                                self._keeping, self._kept = False, []
                yield item

        return items()


def _metadata(job_id: str) -> tuple[tuple[str, str], ...]:
    return ((JOB_METADATA_KEY, job_id),)


def _in_messages(frames: Iterable[VideoFrame]) -> Iterator[list[frames_pb2.Frame]]:
    """Frames as request batches: FRAMES_PER_MESSAGE at most, and within the size limit."""
    messages = (frame_to_proto(frame) for frame in frames)
    yield from frame_batches(messages, DEFAULT_MAX_MESSAGE_BYTES, FRAMES_PER_MESSAGE)


class _StageClient:
    """One model server: its channel and stub, the engine it reports, and the call in flight,
    which ``cancel`` ends from any thread (a stopped job frees the server's slot at once)."""

    stub_class: type

    def __init__(self, target: str, job_id: str = "-"):
        self.target, self.job_id = target, job_id
        self.channel = open_channel(target)
        self.stub = self.stub_class(self.channel)
        self.engine: frames_pb2.EngineInfo | None = None  # known once frames come back
        self._call: grpc.Call | None = None
        self.cancelled = False
        self.busy: BusyBackoff | None = None  # the last call's waits for capacity

    def cancel(self) -> None:
        self.cancelled = True  # also ends a wait for capacity
        call = self._call
        if call is not None:
            call.cancel()

    def _wait_for_capacity(self, stage: str, err: grpc.RpcError, backoff: BusyBackoff) -> None:
        """After RESOURCE_EXHAUSTED: wait (backoff with jitter), or raise at the deadline."""
        if backoff.total_waits == 0:
            log.info("%s server %s is busy (%s); waiting for capacity, %s", stage, self.target,
                     err.details(), backoff.left())
        if not backoff.wait(lambda: self.cancelled):
            if self.cancelled:
                raise stage_failed(stage, err) from err
            raise busy_failure(stage, err, backoff) from err

    def close(self) -> None:
        self.channel.close()


class MotionClient(_StageClient):
    stub_class = motion_pb2_grpc.MotionServiceStub

    def animate(
        self,
        image: bytes,
        template: str | bytes,
        options: MotionOptions,
        timeout: float | None = None,
        on_frame=None,
        busy_deadline: float | None = None,
    ) -> tuple[list[VideoFrame], motion_pb2.AnimateResponse]:
        """The whole motion clip (it is short and reused for every output frame).

        A busy server (RESOURCE_EXHAUSTED) is called again after a backoff, until
        ``busy_deadline`` (time.monotonic(); None: no limit).
        """
        request = motion_pb2.AnimateRequest(image=image, options=options_to_proto(options))
        if isinstance(template, bytes):
            request.template_npz = template
        else:
            request.template_name = template
        self.busy = backoff = BusyBackoff(busy_deadline)
        while True:
            frames: list[VideoFrame] = []
            header = None
            call = self.stub.Animate(request, timeout=timeout, metadata=_metadata(self.job_id))
            self._call = call
            try:
                for response in call:
                    if header is None:
                        header = response
                    for f in response.frames:
                        frames.append(frame_from_proto(f))
                    if on_frame:
                        on_frame(len(frames), response.total_frames)
                break
            except grpc.RpcError as err:
                if not is_busy(err) or header is not None:
                    raise stage_failed("motion", err) from err
                self._wait_for_capacity("motion", err, backoff)
            finally:
                call.cancel()  # a no-op when it ended; frees the server at once if we stop
        if header is None or len(frames) != header.total_frames:
            raise StageFailed(
                "motion", grpc.StatusCode.DATA_LOSS,
                f"expected {header.total_frames if header else '?'} frames, got {len(frames)}",
            )
        return frames, header

    def engine_info(self) -> frames_pb2.EngineInfo:
        try:
            reply = self.stub.GetEngineInfo(motion_pb2.GetEngineInfoRequest(), timeout=10,
                                            metadata=_metadata(self.job_id))
        except grpc.RpcError as err:
            raise stage_failed("motion", err) from err
        return reply.engine

    def list_templates(self) -> list[motion_pb2.TemplateInfo]:
        return list(self.stub.ListTemplates(motion_pb2.ListTemplatesRequest(), timeout=10).templates)


class LipSyncClient(_StageClient):
    stub_class = lipsync_pb2_grpc.LipSyncServiceStub

    def sync(
        self,
        frames: Iterable[VideoFrame],
        audio: np.ndarray | bytes,
        fps: float,
        pass_through_faceless: bool = False,
        timeout: float | None = None,
        busy_deadline: float | None = None,
    ) -> Iterator[VideoFrame]:
        """Stream frames through the server; synced frames stream back as they are ready.

        ``audio`` is 16 kHz mono float32 samples, or the bytes of an audio file. A busy
        server (RESOURCE_EXHAUSTED, before any answer) is called again with the same frames
        after a backoff, until ``busy_deadline`` (time.monotonic(); None: no limit).
        """
        if isinstance(audio, bytes):
            audio_msg = frames_pb2.Audio(encoded_file=audio)
        else:
            audio_msg = frames_pb2.Audio(pcm_s16le_16k_mono=float_to_pcm_s16le(audio))
        config = lipsync_pb2.SyncConfig(
            audio=audio_msg, fps=fps, pass_through_faceless=pass_through_faceless
        )

        def requests(attempt: Iterable[VideoFrame]) -> Iterator[lipsync_pb2.SyncRequest]:
            yield lipsync_pb2.SyncRequest(config=config)
            for batch in _in_messages(attempt):
                yield lipsync_pb2.SyncRequest(frames=batch)

        replay = _Replay(frames)
        self.busy = backoff = BusyBackoff(busy_deadline)
        while True:
            call = self.stub.Sync(requests(replay.attempt()), timeout=timeout,
                                  metadata=_metadata(self.job_id))
            self._call = call
            answered = False
            try:
                for response in call:
                    if not answered:
                        answered = True
                        replay.accepted()
                    if response.HasField("engine"):
                        self.engine = response.engine
                    for f in response.frames:
                        yield frame_from_proto(f)
                return
            except grpc.RpcError as err:
                if not is_busy(err) or answered or not replay.replayable:
                    raise stage_failed("lipsync", err) from err
                self._wait_for_capacity("lipsync", err, backoff)
            finally:
                call.cancel()


class RestoreClient(_StageClient):
    """One restore replica. The fan-out over many lives in restore_fanout.py."""

    stub_class = restore_pb2_grpc.RestoreServiceStub

    def restore(
        self, frames: list[VideoFrame], weight: float = 0.5, timeout: float | None = None
    ) -> list[VideoFrame]:
        """One chunk restored. An error is a StageFailed, as animate's and sync's are, with
        ``busy`` set when the replica is full; the fan-out decides where the chunk goes next
        (a replica is not waited for here)."""

        def requests() -> Iterator[restore_pb2.RestoreRequest]:
            config = restore_pb2.RestoreConfig(weight=weight)
            batches = list(_in_messages(frames)) or [[]]
            for i, batch in enumerate(batches):
                yield restore_pb2.RestoreRequest(config=config if i == 0 else None, frames=batch)

        out: list[VideoFrame] = []
        call = self.stub.Restore(requests(), timeout=timeout, metadata=_metadata(self.job_id))
        self._call = call
        try:
            for response in call:
                if response.HasField("engine"):
                    self.engine = response.engine
                out.extend(frame_from_proto(f) for f in response.frames)
        except grpc.RpcError as err:
            raise stage_failed("restore", err) from err
        finally:
            self._call = None
        return out
