"""Lite restore engine: edge-preserving denoise and unsharp mask on the face.

No weights. GFPGAN re-synthesises a face; without a network the most we can honestly do
is clean what is there: a bilateral filter removes the grain and blocking that warping and
video compression leave (it averages only across pixels of similar colour, so edges stay),
then an unsharp mask restores the crispness of eyes, brows and lips. The result is blended
back through a feathered ellipse over the face, scaled by ``weight``, so nothing outside
the face changes and there is no visible border. Restoration is best-effort: a frame where
no face is known or found comes back unchanged.
"""

from __future__ import annotations

import cv2
import numpy as np

from talkinghead.services.common.engine_contract import RestoreEngine
from talkinghead.services.common.errors import InputError
from talkinghead.services.common.face_detection import detect_faces
from talkinghead.services.common.frames import FaceGeometry, VideoFrame

REGION_SCALE = (1.5, 1.7)  # restored region, in face-box widths/heights (brow to chin)
REGION_DROP = 0.12  # region centre below the box centre, face heights (box is brow-heavy)
FEATHER = 0.35  # soft border of the ellipse, fraction of its radius
BILATERAL_COLOUR = 25.0  # colour sigma: differences above this count as edges (0..255)
UNSHARP_AMOUNT = 0.9  # detail added back, times the detail removed by the blur
DETAIL_SIGMA_PER_FACE = 1.0 / 60.0  # unsharp blur radius, per face-box width


def _region(face: FaceGeometry, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    cx, cy = face.center
    cy += REGION_DROP * face.height
    half_w, half_h = REGION_SCALE[0] * face.width / 2.0, REGION_SCALE[1] * face.height / 2.0
    h, w = shape[:2]
    x0, y0 = max(0, int(np.floor(cx - half_w))), max(0, int(np.floor(cy - half_h)))
    x1, y1 = min(w, int(np.ceil(cx + half_w))), min(h, int(np.ceil(cy + half_h)))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    return x0, y0, x1, y1


def _feathered_ellipse(face: FaceGeometry, region: tuple[int, int, int, int]) -> np.ndarray:
    """(h, w, 1) mask: 1 inside the face ellipse, falling smoothly to 0 at its rim."""
    x0, y0, x1, y1 = region
    cx, cy = face.center
    cy += REGION_DROP * face.height
    ax, ay = REGION_SCALE[0] * face.width / 2.0, REGION_SCALE[1] * face.height / 2.0
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    radius = np.hypot((xs - cx) / ax, (ys - cy) / ay)
    t = np.clip((1.0 - radius) / FEATHER, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t))[..., None]


def enhance_face(image: np.ndarray, face: FaceGeometry, weight: float) -> np.ndarray:
    """A copy of the image with the face region denoised, sharpened and blended in."""
    region = _region(face, image.shape)
    if region is None:
        return image
    x0, y0, x1, y1 = region
    patch = image[y0:y1, x0:x1]
    scale = max(face.width, face.height)
    denoised = cv2.bilateralFilter(patch, d=5, sigmaColor=BILATERAL_COLOUR, sigmaSpace=max(1.5, scale / 60.0))
    sigma = max(0.8, scale * DETAIL_SIGMA_PER_FACE)
    blurred = cv2.GaussianBlur(denoised, (0, 0), sigma)
    sharpened = cv2.addWeighted(denoised, 1.0 + UNSHARP_AMOUNT, blurred, -UNSHARP_AMOUNT, 0.0)
    alpha = weight * _feathered_ellipse(face, region)
    blended = patch + alpha * (sharpened.astype(np.float32) - patch)
    out = image.copy()
    out[y0:y1, x0:x1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return out


def _faces_for(frame: VideoFrame, only_center_face: bool) -> list[FaceGeometry]:
    """The face carried by the frame, else those Haar finds (the most central if asked)."""
    if frame.face is not None and frame.face.width > 0 and frame.face.height > 0:
        return [frame.face]
    faces = detect_faces(frame.image, refine_eyes=False)
    if only_center_face and faces:
        cx, cy = frame.width / 2.0, frame.height / 2.0
        faces = [min(faces, key=lambda f: np.hypot(f.center[0] - cx, f.center[1] - cy))]
    return faces


class LiteRestoreEngine(RestoreEngine):
    """Bilateral denoise plus unsharp mask on the face; a fallback when GFPGAN is absent."""

    name = "lite"
    device = "cpu"
    fingerprint = "lite-restore-1"

    def warmup(self) -> None:
        """Load the cascades and restore one synthetic face."""
        image = np.full((128, 128, 3), 140, np.uint8)
        cv2.circle(image, (64, 60), 24, (200, 160, 140), -1)
        detect_faces(image)
        enhance_face(image, FaceGeometry(box=(40.0, 36.0, 88.0, 84.0)), 0.5)

    def restore(
        self, frames: list[VideoFrame], weight: float = 0.5, only_center_face: bool = False
    ) -> list[VideoFrame]:
        """The frames with their faces cleaned up; same indices and geometry out as in."""
        if not 0.0 <= weight <= 1.0:
            raise InputError(f"weight must be in [0, 1], got {weight}")
        restored = []
        for frame in frames:
            image = frame.image
            if weight > 0.0:
                for face in _faces_for(frame, only_center_face):
                    image = enhance_face(image, face, weight)
            restored.append(VideoFrame(index=frame.index, image=image, face=frame.face))
        return restored
