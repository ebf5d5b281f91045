"""MotionService: photo + driving template → animated frames with face geometry."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from talkinghead.services.common import option_ranges as ranges
from talkinghead.services.common.engine_contract import MotionEngine
from talkinghead.services.common.errors import InputError, NotFoundError
from talkinghead.services.common.frames import FaceGeometry
from talkinghead.services.common.option_ranges import check_range
from talkinghead.services.common.server import ServerSettings, StageServicer, streaming_rpc
from talkinghead.services.common.wire import decode_image, frame_batches, frame_to_proto
from talkinghead.services.motion.options import MotionReport, options_from_proto
from talkinghead.services.motion.template import (
    bundled_template_names,
    load_template,
    template_from_npz,
)
from talkinghead.v1 import motion_pb2, motion_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_CHUNK_FRAMES = 8
MAX_PHOTO_PIXELS = 40_000_000


def fit_photo(photo: np.ndarray, max_side: int) -> np.ndarray:
    """Scale down so the longest side is at most ``max_side``, with even dimensions (H.264)."""
    h, w = photo.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    new_w, new_h = int(round(w * scale)) // 2 * 2, int(round(h * scale)) // 2 * 2
    if (new_w, new_h) == (w, h):
        return photo
    return cv2.resize(photo, (new_w, new_h), interpolation=cv2.INTER_AREA)


class MotionServicer(StageServicer[MotionEngine], motion_pb2_grpc.MotionServiceServicer):
    stage = "motion"
    service = motion_pb2.DESCRIPTOR.services_by_name["MotionService"]
    add_to_server = motion_pb2_grpc.add_MotionServiceServicer_to_server

    def __init__(self, settings: ServerSettings):
        super().__init__(settings)
        # --templates-dir: folders searched before the bundled templates
        self.template_dirs = [Path(d) for d in settings.options["templates_dir"]]

    @streaming_rpc("Animate")
    def Animate(self, request: motion_pb2.AnimateRequest, context) -> Iterator:
        options = options_from_proto(request.options)  # numbers first: refused before any work
        if request.chunk_frames != 0:
            check_range(request.chunk_frames, ranges.MOTION_CHUNK_FRAMES, "chunk_frames")
        photo = decode_image(request.image, what="the face photo (field image)",
                             max_pixels=MAX_PHOTO_PIXELS)
        which = request.WhichOneof("template")
        if which == "template_name":
            template = load_template(request.template_name, self.template_dirs)
        elif which == "template_npz":
            template = template_from_npz(request.template_npz)
        else:
            raise InputError("a template is required (template_name or template_npz)")
        if options.fps == 0:
            options = options.model_copy(update={"fps": template.fps})
        template = template.resample(options.fps)
        photo = fit_photo(photo, options.max_side)
        face: FaceGeometry = self.engine.prepare(photo)
        log.info(
            "animating %dx%d photo (face %s) with template %r: %d frames at %g fps",
            photo.shape[1], photo.shape[0], tuple(round(v) for v in face.box),
            template.name, template.n_frames, options.fps,
        )
        chunk = request.chunk_frames or DEFAULT_CHUNK_FRAMES
        report = MotionReport()  # filled in by the engine before its first frame
        frames = self.engine.animate(photo, template, options, report)
        messages = (frame_to_proto(f) for f in frames)
        for i, batch in enumerate(frame_batches(messages, self.max_message_bytes, chunk)):
            if i == 0:
                log.info("driving: region %s, %s (m %.6g), multiplier %g%s",
                         options.animation_region, options.driving_option,
                         report.motion_multiplier, options.driving_multiplier,
                         "".join(f"; {n}" for n in report.notes))
            yield motion_pb2.AnimateResponse(
                total_frames=template.n_frames,
                fps=options.fps,
                frames=batch,
                engine=self.engine_info() if i == 0 else None,
                report=report.to_proto() if i == 0 else None,
            )

    def GetEngineInfo(self, request, context) -> motion_pb2.GetEngineInfoResponse:
        return motion_pb2.GetEngineInfoResponse(engine=self.engine_info_or_abort(context))

    def ListTemplates(self, request, context) -> motion_pb2.ListTemplatesResponse:
        names = set(bundled_template_names())
        for folder in self.template_dirs:
            names.update(p.stem for p in Path(folder).glob("*.npz"))
        infos = []
        for name in sorted(names):
            try:
                t = load_template(name, self.template_dirs)
            except (InputError, NotFoundError) as exc:
                log.warning("skipping template %r: %s", name, exc)
                continue
            infos.append(motion_pb2.TemplateInfo(name=name, frames=t.n_frames, fps=t.fps))
        return motion_pb2.ListTemplatesResponse(templates=infos)

