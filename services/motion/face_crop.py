"""The square face crop LivePortrait animates, and pasting the result back into the photo.

The official pipeline crops around InsightFace's 106/203-point landmarks: a square of
2.3x the face's size, shifted up by 0.125 of its side, rotated so the eyes are level, at
256 px for the networks. We derive the same kind of crop from our own detector's five
landmarks (eyes and mouth corners): the centre between the eye centre and the mouth
centre, the side from the eye-to-mouth distance and the eye distance, the angle from the
eye line. The animated 512 px output goes back into the photo through the inverse of the
same similarity transform, blended with a feathered mask so no seam shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from talkinghead.services.common.frames import FaceGeometry

CROP_SCALE = 2.3  # crop side over face size, as the official crop_cfg
CROP_SHIFT_Y = -0.125  # shift of the centre, in crop sides (negative: up), as vy_ratio
NETWORK_SIZE = 256


@dataclass(frozen=True)
class FaceCrop:
    """A similarity transform from photo pixels to a square crop of side ``size``."""

    matrix: np.ndarray  # (2, 3) float64, photo → crop
    size: int

    def scaled(self, size: int) -> FaceCrop:
        """The same crop at another resolution (e.g. the 512 px generator output)."""
        factor = size / self.size
        return FaceCrop(self.matrix * factor, size)

    def inverse(self) -> np.ndarray:
        return cv2.invertAffineTransform(self.matrix)

    def cut(self, photo: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(photo, self.matrix, (self.size, self.size),
                              flags=cv2.INTER_AREA if self.matrix[0, 0] < 1 else cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)


def face_size(face: FaceGeometry) -> float:
    """A rotation-free size of the face from its five points (box as fallback)."""
    lm = np.asarray(face.landmarks, dtype=np.float64)
    if lm.shape == (5, 2) and np.any(lm):
        eye_centre = lm[:2].mean(axis=0)
        mouth_centre = lm[3:5].mean(axis=0)
        eye_to_mouth = np.linalg.norm(mouth_centre - eye_centre)
        eye_distance = np.linalg.norm(lm[1] - lm[0])
        # on a frontal face the box is ~2.2 eye-to-mouth and ~2.4 eye distances across
        return float(max(2.2 * eye_to_mouth, 2.4 * eye_distance))
    return float(max(face.width, face.height))


def crop_for_face(face: FaceGeometry, size: int = NETWORK_SIZE) -> FaceCrop:
    lm = np.asarray(face.landmarks, dtype=np.float64)
    if lm.shape == (5, 2) and np.any(lm):
        eye_centre, mouth_centre = lm[:2].mean(axis=0), lm[3:5].mean(axis=0)
        centre = (eye_centre + mouth_centre) / 2.0
        dx, dy = lm[1] - lm[0]
        angle = np.arctan2(dy, dx)
    else:
        centre = np.array(face.center, dtype=np.float64)
        angle = 0.0
    side = CROP_SCALE * face_size(face)
    # shift along the face's own vertical axis
    up = np.array([np.sin(angle), -np.cos(angle)])
    centre = centre - up * (CROP_SHIFT_Y * side)
    scale = size / side
    cos, sin = np.cos(-angle) * scale, np.sin(-angle) * scale
    matrix = np.array([[cos, -sin, 0.0], [sin, cos, 0.0]])
    matrix[:, 2] = size / 2.0 - matrix[:, :2] @ centre
    return FaceCrop(matrix, size)


def feather_mask(size: int, border: float = 0.1) -> np.ndarray:
    """(size, size) float32: 1 inside, falling smoothly to 0 over ``border`` of the side."""
    ramp = np.clip(np.minimum(np.arange(size), np.arange(size)[::-1]) / (border * size), 0, 1)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep
    return np.outer(ramp, ramp).astype(np.float32)


def paste_back(photo: np.ndarray, animated: np.ndarray, crop: FaceCrop,
               mask: np.ndarray | None = None) -> np.ndarray:
    """Blend the animated square (any resolution) into the photo where it was cut from."""
    side = animated.shape[0]
    placed = crop.scaled(side)
    inverse = placed.inverse()
    height, width = photo.shape[:2]
    warped = cv2.warpAffine(animated, inverse, (width, height), flags=cv2.INTER_LINEAR)
    weight = cv2.warpAffine(mask if mask is not None else feather_mask(side), inverse,
                            (width, height), flags=cv2.INTER_LINEAR)[..., None]
    blended = photo.astype(np.float32) * (1 - weight) + warped.astype(np.float32) * weight
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)
