"""RestoreService: frames in, frames with a cleaned-up face out (same order, same indices).

Stateless per chunk, so any number of replicas can share the work of one video.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from talkinghead.services.common import option_ranges as ranges
from talkinghead.services.common.engines import choose_engine
from talkinghead.services.common.option_ranges import check_range, checked_frame
from talkinghead.services.common.server import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ModelServer,
    ServerSettings,
    StageGate,
    streaming_rpc,
)
from talkinghead.services.common.wire import frame_batches, frame_to_proto
from talkinghead.v1 import frames_pb2, restore_pb2, restore_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_WEIGHT = 0.5


class RestoreServicer(restore_pb2_grpc.RestoreServiceServicer):
    max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES  # the server's own, set by ModelServer
    stage = "restore"

    def __init__(self) -> None:
        self.gate: StageGate | None = None  # set by ModelServer
        self.engine = None  # set once loaded and warm

    @streaming_rpc("Restore")
    def Restore(self, request_iterator, context) -> Iterator[restore_pb2.RestoreResponse]:
        weight, only_center, info = DEFAULT_WEIGHT, False, None
        for n, request in enumerate(request_iterator):
            if n == 0:
                if request.config.HasField("weight"):
                    weight = request.config.weight
                check_range(weight, ranges.RESTORE_WEIGHT, "config.weight")
                only_center = request.config.only_center_face
                info = frames_pb2.EngineInfo(
                    name=self.engine.name,
                    device=self.engine.device,
                    fingerprint=self.engine.fingerprint,
                )
            frames = [checked_frame(f) for f in request.frames]
            restored = self.engine.restore(frames, weight, only_center) if frames else []
            messages = (frame_to_proto(f) for f in restored)
            batches = list(frame_batches(messages, self.max_message_bytes)) or [[]]
            for i, batch in enumerate(batches):
                first = n == 0 and i == 0
                yield restore_pb2.RestoreResponse(frames=batch, engine=info if first else None)


def load_restore_engine(settings: ServerSettings):
    from talkinghead.services.restore.lite_engine import LiteRestoreEngine

    def gfpgan(device: str):
        from talkinghead.services.restore.gfpgan_engine import GFPGANEngine

        return GFPGANEngine(settings.weights_dir, device, settings.batch_size, half=settings.half,
                            paste_mask=settings.paste_mask, bf16_cpu=settings.bf16,
                            compile_network=settings.compile)

    return choose_engine("restore", settings.engine, settings.device, "gfpgan",
                         LiteRestoreEngine, gfpgan)


def build_server(settings: ServerSettings) -> ModelServer:
    return ModelServer(
        settings,
        RestoreServicer(),
        restore_pb2_grpc.add_RestoreServiceServicer_to_server,
        restore_pb2.DESCRIPTOR.services_by_name["RestoreService"].full_name,
        lambda: load_restore_engine(settings),
    )
