"""The documented range of every numeric field of a request, enforced by each server.

One table for the three servers and the job spec (``MotionOptions`` and the job's
``RenderOptions`` take their field bounds from it; a test holds the two together): a value
out of range is refused with INVALID_ARGUMENT naming the field and its range, before any
work. Proto3 cannot tell 0 from unset for plain scalars, so where a field says "0 means
..." the value 0 is the unset case, not part of the range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from talkinghead.services.common.errors import InputError
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.common.wire import frame_from_proto
from talkinghead.v1 import frames_pb2


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    unset: str = ""  # what 0 / unset means, when the field has such a case

    def text(self) -> str:
        return f"{self.low:g}..{self.high:g}"


# MotionService.Animate
MOTION_FPS = Range(10.0, 60.0, "0 means the template's own rate")
MOTION_MAX_SIDE = Range(128, 4096, "0 means 1024")
MOTION_EXPRESSION_MULTIPLIER = Range(0.0, 3.0, "unset means 1.0")
MOTION_DRIVING_MULTIPLIER = Range(0.0, 3.0, "unset means 1.0")
MOTION_CHUNK_FRAMES = Range(1, 256, "0 means the server's default")
# LipSyncService.Sync (required: no unset case)
LIPSYNC_FPS = Range(10.0, 60.0)
# RestoreService.Restore
RESTORE_WEIGHT = Range(0.0, 1.0, "unset means 0.5")
# Frame.face (lipsync and restore requests): counts, and the ranges that do not depend on the
# frame's size; box and landmark coordinates lie within the frame widened by its own width
# (height) on each side: x in -width..2*width, y in -height..2*height.
LANDMARK_COUNTS = (0, 5)
CROP_TRANSFORM_COUNTS = (0, 6)
CROP_TRANSFORM_VALUE = Range(-1e6, 1e6)
CROP_SIZE = Range(0, 4096, "0 means unknown")
# The motion frame a frame was made from: the clip key (empty: unknown), at most 64 of
# these characters (the orchestrator sends motion_cache.clip_key: 32 hex digits), and the
# frame's index in the clip.
CLIP_KEY_MAX_CHARS = 64
CLIP_KEY_PATTERN = re.compile(r"[0-9A-Za-z._:-]*")
CLIP_FRAME = Range(0, 1_000_000)


def check_range(value: float, allowed: Range, field: str) -> None:
    """Refuse ``value`` (NaN and infinities too) unless ``allowed.low <= value <= allowed.high``."""
    if not allowed.low <= value <= allowed.high:  # NaN compares false: refused too
        unset = f"; {allowed.unset}" if allowed.unset else ""
        raise InputError(f"{field} must be within {allowed.text()}{unset}; got {value:g}")


def check_face_geometry(msg: frames_pb2.Frame, width: int, height: int) -> None:
    """Refuse a frame whose face geometry a stage cannot use (NaN, a box far outside the
    frame, a wrong number of points), naming the frame and the field."""
    if not msg.HasField("face"):
        return
    face, where = msg.face, f"frame {msg.index}: face"
    xs, ys = Range(-width, 2 * width), Range(-height, 2 * height)
    box = face.box
    for name, value, allowed in (("x0", box.x0, xs), ("y0", box.y0, ys),
                                 ("x1", box.x1, xs), ("y1", box.y1, ys)):
        check_range(value, allowed, f"{where}.box.{name}")
    if not (box.x0 < box.x1 and box.y0 < box.y1):
        raise InputError(f"{where}.box must have x0 < x1 and y0 < y1; got ({box.x0:g}, "
                         f"{box.y0:g}, {box.x1:g}, {box.y1:g})")
    if len(face.landmarks) not in LANDMARK_COUNTS:
        raise InputError(f"{where}.landmarks must hold 0 or 5 points; got {len(face.landmarks)}")
    for i, point in enumerate(face.landmarks):
        check_range(point.x, xs, f"{where}.landmarks[{i}].x")
        check_range(point.y, ys, f"{where}.landmarks[{i}].y")
    if len(face.crop_transform) not in CROP_TRANSFORM_COUNTS:
        raise InputError(f"{where}.crop_transform must hold 0 or 6 values; "
                         f"got {len(face.crop_transform)}")
    for i, value in enumerate(face.crop_transform):
        check_range(value, CROP_TRANSFORM_VALUE, f"{where}.crop_transform[{i}]")
    check_range(face.crop_size, CROP_SIZE, f"{where}.crop_size")
    if len(face.clip_key) > CLIP_KEY_MAX_CHARS or not CLIP_KEY_PATTERN.fullmatch(face.clip_key):
        raise InputError(f"{where}.clip_key must be at most {CLIP_KEY_MAX_CHARS} characters "
                         f"of 0-9, A-Z, a-z, '.', '_', ':', '-'; got {face.clip_key[:80]!r}")
    check_range(face.clip_frame, CLIP_FRAME, f"{where}.clip_frame")


def checked_frame(msg: frames_pb2.Frame) -> VideoFrame:
    """``wire.frame_from_proto``, then the face geometry checked against the frame's size."""
    frame = frame_from_proto(msg)
    check_face_geometry(msg, frame.width, frame.height)
    return frame
