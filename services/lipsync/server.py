"""LipSyncService: frames + audio → frames whose mouth moves with the speech."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from talkinghead.services.common import option_ranges as ranges
from talkinghead.services.common.audio import (
    DEFAULT_MAX_AUDIO_SECONDS,
    check_audio,
    decode_audio_bytes,
    pcm_s16le_to_float,
)
from talkinghead.services.common.engine_contract import LipSyncEngine
from talkinghead.services.common.errors import InputError
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.common.option_ranges import check_range, checked_frame
from talkinghead.services.common.server import ServerSettings, StageServicer, streaming_rpc
from talkinghead.services.common.wire import frame_batches, frame_to_proto
from talkinghead.v1 import frames_pb2, lipsync_pb2, lipsync_pb2_grpc

log = logging.getLogger(__name__)


def audio_from_proto(msg: frames_pb2.Audio, max_seconds: float):
    which = msg.WhichOneof("payload")
    if which == "pcm_s16le_16k_mono":
        stated = len(msg.pcm_s16le_16k_mono) / (2 * 16000)
        if stated > max_seconds:  # refused before the float copy (4x the bytes) is made
            raise InputError(f"config.audio is longer than the {max_seconds:g} s limit: "
                             f"it holds {stated:.1f} s of 16 kHz PCM")
        samples = pcm_s16le_to_float(msg.pcm_s16le_16k_mono)
        check_audio(samples, max_seconds, what="config.audio")
        return samples
    if which == "encoded_file":
        return decode_audio_bytes(msg.encoded_file, max_seconds)
    raise InputError("config.audio is required in the first message")


class LipSyncServicer(StageServicer[LipSyncEngine], lipsync_pb2_grpc.LipSyncServiceServicer):
    stage = "lipsync"
    service = lipsync_pb2.DESCRIPTOR.services_by_name["LipSyncService"]
    add_to_server = lipsync_pb2_grpc.add_LipSyncServiceServicer_to_server

    def __init__(self, settings: ServerSettings,
                 max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS):
        super().__init__(settings)
        self.chunk_frames = settings.batch_size  # frames per response
        self.max_audio_seconds = max_audio_seconds

    @streaming_rpc("Sync")
    def Sync(self, request_iterator, context) -> Iterator[lipsync_pb2.SyncResponse]:
        first = next(request_iterator, None)
        if first is None or not first.HasField("config"):
            raise InputError("the first SyncRequest must carry config (audio and fps)")
        config = first.config
        check_range(config.fps, ranges.LIPSYNC_FPS, "config.fps")
        audio = audio_from_proto(config.audio, self.max_audio_seconds)
        log.info("syncing to %.2fs of audio at %g fps", len(audio) / 16000, config.fps)

        def incoming() -> Iterator[VideoFrame]:
            for f in first.frames:
                yield checked_frame(f)
            for request in request_iterator:
                for f in request.frames:
                    yield checked_frame(f)

        synced = self.engine.sync(incoming(), audio, config.fps, config.pass_through_faceless)
        info = self.engine_info()
        messages = (frame_to_proto(f) for f in synced)
        batches = frame_batches(messages, self.max_message_bytes, self.chunk_frames)
        for i, batch in enumerate(batches):
            yield lipsync_pb2.SyncResponse(frames=batch, engine=info if i == 0 else None)

