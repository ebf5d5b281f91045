"""Clients of the three model servers, in the orchestrator's terms (VideoFrame in and out).

Every call carries the job id as metadata so the servers' logs name the job. Before the
first call a client waits for the server's health to say SERVING: a server still loading
its model is waited for, not treated as down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from talkinghead.services.common.audio import float_to_pcm_s16le
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.common.logs import JOB_METADATA_KEY
from talkinghead.services.common.security import client_channel
from talkinghead.services.common.server import DEFAULT_MAX_MESSAGE_BYTES
from talkinghead.services.common.wire import frame_batches, frame_from_proto, frame_to_proto
from talkinghead.services.motion.options import MotionOptions
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

    def __init__(self, stage: str, code: grpc.StatusCode, details: str):
        super().__init__(f"{stage} server: {code.name}: {details}")
        self.stage, self.code, self.details = stage, code, details


def stage_failed(stage: str, err: grpc.RpcError) -> StageFailed:
    return StageFailed(stage, err.code(), err.details() or "")


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
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
            last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as err:
            last = f"{err.code().name}: {err.details()}"
        time.sleep(0.25)
    raise StageUnavailable(f"{stage} server at {target} not SERVING after {timeout:g}s ({last})")


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

    def cancel(self) -> None:
        if self._call is not None:
            self._call.cancel()

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
    ) -> tuple[list[VideoFrame], motion_pb2.AnimateResponse]:
        """The whole motion clip (it is short and reused for every output frame)."""
        request = motion_pb2.AnimateRequest(
            image=image,
            options=motion_pb2.MotionOptions(
                fps=options.fps,
                max_side=options.max_side,
                absolute_motion=not options.relative_motion,
                expression_multiplier=options.expression_multiplier,
                disable_stitching=not options.stitching,
                eye_retargeting=options.eye_retargeting,
                lip_retargeting=options.lip_retargeting,
            ),
        )
        if isinstance(template, bytes):
            request.template_npz = template
        else:
            request.template_name = template
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
        except grpc.RpcError as err:
            raise stage_failed("motion", err) from err
        finally:
            call.cancel()  # a no-op when it ended; frees the server at once when we stop early
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
    ) -> Iterator[VideoFrame]:
        """Stream frames through the server; synced frames stream back as they are ready.

        ``audio`` is 16 kHz mono float32 samples, or the bytes of an audio file.
        """
        if isinstance(audio, bytes):
            audio_msg = frames_pb2.Audio(encoded_file=audio)
        else:
            audio_msg = frames_pb2.Audio(pcm_s16le_16k_mono=float_to_pcm_s16le(audio))
        config = lipsync_pb2.SyncConfig(
            audio=audio_msg, fps=fps, pass_through_faceless=pass_through_faceless
        )

        def requests() -> Iterator[lipsync_pb2.SyncRequest]:
            yield lipsync_pb2.SyncRequest(config=config)
            for batch in _in_messages(frames):
                yield lipsync_pb2.SyncRequest(frames=batch)

        call = self.stub.Sync(requests(), timeout=timeout, metadata=_metadata(self.job_id))
        self._call = call
        try:
            for response in call:
                if response.HasField("engine"):
                    self.engine = response.engine
                for f in response.frames:
                    yield frame_from_proto(f)
        except grpc.RpcError as err:
            raise stage_failed("lipsync", err) from err
        finally:
            call.cancel()


class RestoreClient(_StageClient):
    """One restore replica. The fan-out over many lives in restore_fanout.py."""

    stub_class = restore_pb2_grpc.RestoreServiceStub

    def restore(
        self, frames: list[VideoFrame], weight: float = 0.5, timeout: float | None = None
    ) -> list[VideoFrame]:
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
        finally:
            self._call = None
        return out
