"""In-process frame types shared by every stage.

Engines work on numpy arrays; only the gRPC layer (``services/common/wire.py``) knows about
protobuf. A frame carries the face geometry the motion stage found, so that lipsync and
restore never have to detect the face again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FaceGeometry:
    """Where the face is in one frame (pixel coordinates of that frame)."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    # (5, 2) float32: left eye, right eye, nose tip, left mouth corner, right mouth corner.
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((5, 2), np.float32))
    # (2, 3) float32 affine from frame pixels to the square face crop, or None.
    crop_transform: np.ndarray | None = None
    crop_size: int = 0
    # The motion-clip frame this frame was made from: the clip's key ("" unknown) and the
    # frame's index in it. What depends only on the motion frame (restore's paste-back
    # mask) is computed once per (clip_key, clip_frame) and reused.
    clip_key: str = ""
    clip_frame: int = 0

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0


@dataclass
class VideoFrame:
    """One frame: its position in the output video, RGB pixels, and where the face is."""

    index: int
    image: np.ndarray  # (H, W, 3) uint8, RGB
    face: FaceGeometry | None = None

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])
