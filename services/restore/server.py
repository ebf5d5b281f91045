"""RestoreService: frames in, frames with a cleaned-up face out (same order, same indices).

Stateless per chunk, so any number of replicas can share the work of one video.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from talkinghead.services.common import option_ranges as ranges
from talkinghead.services.common.engine_contract import RestoreEngine
from talkinghead.services.common.option_ranges import check_range, checked_frame
from talkinghead.services.common.server import StageServicer, streaming_rpc
from talkinghead.services.common.wire import frame_batches, frame_to_proto
from talkinghead.v1 import restore_pb2, restore_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_WEIGHT = 0.5


class RestoreServicer(StageServicer[RestoreEngine], restore_pb2_grpc.RestoreServiceServicer):
    stage = "restore"
    service = restore_pb2.DESCRIPTOR.services_by_name["RestoreService"]
    add_to_server = restore_pb2_grpc.add_RestoreServiceServicer_to_server

    @streaming_rpc("Restore")
    def Restore(self, request_iterator, context) -> Iterator[restore_pb2.RestoreResponse]:
        weight, only_center, info = DEFAULT_WEIGHT, False, None
        for n, request in enumerate(request_iterator):
            if n == 0:
                if request.config.HasField("weight"):
                    weight = request.config.weight
                check_range(weight, ranges.RESTORE_WEIGHT, "config.weight")
                only_center = request.config.only_center_face
                info = self.engine_info()
            frames = [checked_frame(f) for f in request.frames]
            restored = self.engine.restore(frames, weight, only_center) if frames else []
            messages = (frame_to_proto(f) for f in restored)
            batches = list(frame_batches(messages, self.max_message_bytes)) or [[]]
            for i, batch in enumerate(batches):
                first = n == 0 and i == 0
                yield restore_pb2.RestoreResponse(frames=batch, engine=info if first else None)

