"""Face detection with OpenCV's bundled Haar cascades, for the lite (weight-free) engines.

The frontal-face cascade gives a box; five landmarks are then placed by average face
proportions inside that box and, when the eye cascade finds a plausible pair of eyes,
re-anchored on those eyes (the inter-ocular line fixes position, scale and in-plane tilt
of the nose and mouth). Good enough to say where the mouth and head are; not a landmark
model.

The cascades are loaded once per process. ``CascadeClassifier.detectMultiScale`` is not
documented as thread-safe, so every call goes through one lock; detection runs on a copy
no larger than ``DETECT_MAX_SIDE`` so the lock is held for milliseconds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from talkinghead.services.common.errors import InputError
from talkinghead.services.common.frames import FaceGeometry

FACE_CASCADES = ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml")
EYE_CASCADE = "haarcascade_eye.xml"
DETECT_MAX_SIDE = 480  # longest side of the image the cascade sees
MIN_FACE_FRACTION = 0.08  # smallest face searched for, as a fraction of the shorter side
MIN_FACE_FOR_EYES = 48  # face boxes smaller than this (detection pixels) skip eye refinement
# A detection whose final-stage score is below this fraction of the best one in the image is
# dropped: the cascade's false alarms (collars, hair, folds) score far below a real face in
# the same picture, and can be larger, which would make them the "largest face".
MIN_RELATIVE_SCORE = 0.5

# Average landmark positions as fractions of a frontalface_default box (x, y), measured on
# frontal portraits: the box spans brows to just below the mouth, eyes sit at ~38 % of its
# height, the nose tip at ~62 %, the mouth corners at ~80 %.
BOX_LANDMARKS = np.array([[0.30, 0.38], [0.70, 0.38], [0.50, 0.62], [0.35, 0.80], [0.65, 0.80]], np.float32)
# The same points relative to the eyes, in units of the inter-ocular distance d, in a frame
# whose x axis runs from the left eye to the right eye: origin at the eyes' midpoint.
EYE_FRAME_LANDMARKS = np.array(
    [[-0.5, 0.0], [0.5, 0.0], [0.0, 0.60], [-0.42, 0.95], [0.42, 0.95]], np.float32
)


@dataclass
class _Cascades:
    faces: list[cv2.CascadeClassifier]
    eyes: cv2.CascadeClassifier


_lock = threading.Lock()
_cascades: _Cascades | None = None


def _load(name: str) -> cv2.CascadeClassifier:
    classifier = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    if classifier.empty():
        raise RuntimeError(f"OpenCV's Haar cascade {name} is missing from this cv2 install")
    return classifier


def _get_cascades() -> _Cascades:
    """The process-wide classifiers; call with ``_lock`` held."""
    global _cascades
    if _cascades is None:
        _cascades = _Cascades([_load(n) for n in FACE_CASCADES], _load(EYE_CASCADE))
    return _cascades


def to_gray(image: np.ndarray) -> np.ndarray:
    """Gray uint8 from RGB, RGBA or gray input; InputError for anything else."""
    if not isinstance(image, np.ndarray) or image.size == 0:
        raise InputError("image must be a non-empty numpy array")
    if image.dtype != np.uint8:
        raise InputError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2GRAY)
    raise InputError(f"image must be (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")


def landmarks_from_box(box: tuple[float, float, float, float]) -> np.ndarray:
    """Five landmarks (5, 2) placed by average proportions inside a face box."""
    x0, y0, x1, y1 = box
    origin = np.array([x0, y0], np.float32)
    size = np.array([x1 - x0, y1 - y0], np.float32)
    return (origin + BOX_LANDMARKS * size).astype(np.float32)


def landmarks_from_eyes(left_eye: np.ndarray, right_eye: np.ndarray) -> np.ndarray:
    """Five landmarks (5, 2) from the two eye centres, following their tilt and distance."""
    left_eye = np.asarray(left_eye, np.float32)
    right_eye = np.asarray(right_eye, np.float32)
    axis = right_eye - left_eye
    down = np.array([-axis[1], axis[0]], np.float32)  # axis turned 90° towards +y (down)
    mid = (left_eye + right_eye) / 2.0
    pts = mid + EYE_FRAME_LANDMARKS[:, :1] * axis + EYE_FRAME_LANDMARKS[:, 1:] * down
    return pts.astype(np.float32)


def _eyes_in_box(gray: np.ndarray, box: np.ndarray, eye_cascade) -> np.ndarray | None:
    """Left and right eye centres (2, 2) found inside a face box, or None if implausible."""
    x, y, w, h = (int(v) for v in box)
    if w < MIN_FACE_FOR_EYES:
        return None
    top = gray[y : y + int(0.6 * h), x : x + w]
    found = eye_cascade.detectMultiScale(
        top,
        scaleFactor=1.1,
        minNeighbors=3,
        minSize=(max(8, w // 8),) * 2,
        maxSize=(w // 2,) * 2,
    )
    if len(found) < 2:
        return None
    centres = np.array([[ex + ew / 2, ey + eh / 2] for ex, ey, ew, eh in found], np.float32)
    sizes = np.array([ew for _, _, ew, _ in found], np.float32)
    left_half = [i for i in range(len(found)) if centres[i, 0] < w / 2]
    right_half = [i for i in range(len(found)) if centres[i, 0] >= w / 2]
    if not left_half or not right_half:
        return None
    li = max(left_half, key=lambda i: sizes[i])
    ri = max(right_half, key=lambda i: sizes[i])
    left, right = centres[li], centres[ri]
    separation = right[0] - left[0]
    plausible = (
        0.3 * w <= separation <= 0.65 * w
        and abs(right[1] - left[1]) <= 0.15 * w
        and 0.2 * h <= (left[1] + right[1]) / 2 <= 0.5 * h
    )
    if not plausible:
        return None
    return np.stack([left, right]) + np.array([x, y], np.float32)


def detect_faces(image_rgb: np.ndarray, refine_eyes: bool = True) -> list[FaceGeometry]:
    """Every frontal face in the image, largest first, with estimated landmarks.

    Tries ``frontalface_default`` and, only if it finds nothing, ``frontalface_alt2``;
    detections scoring far below the image's best are dropped as false alarms.
    """
    gray = to_gray(image_rgb)
    scale = min(1.0, DETECT_MAX_SIDE / max(gray.shape))
    small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    small = cv2.equalizeHist(small)
    min_side = max(20, int(MIN_FACE_FRACTION * min(small.shape)))
    with _lock:
        cascades = _get_cascades()
        boxes: np.ndarray = np.empty((0, 4), int)
        for cascade in cascades.faces:
            found, _, scores = cascade.detectMultiScale3(
                small,
                scaleFactor=1.1,
                minNeighbors=5,
                minSize=(min_side, min_side),
                outputRejectLevels=True,
            )
            if len(found):
                scores = np.asarray(scores, np.float64).reshape(-1)
                boxes = np.asarray(found).reshape(-1, 4)
                best = float(scores.max())
                boxes = boxes[scores >= (MIN_RELATIVE_SCORE * best if best > 0 else best)]
                break
        eyes = [_eyes_in_box(small, b, cascades.eyes) if refine_eyes else None for b in boxes]
    faces = []
    for box, eye_pair in zip(boxes, eyes, strict=True):
        x, y, w, h = (float(v) / scale for v in box)
        geometry_box = (x, y, x + w, y + h)
        if eye_pair is None:
            landmarks = landmarks_from_box(geometry_box)
        else:
            eye_pair = eye_pair / scale
            landmarks = landmarks_from_eyes(eye_pair[0], eye_pair[1])
        faces.append(FaceGeometry(box=geometry_box, landmarks=landmarks))
    faces.sort(key=lambda f: f.width * f.height, reverse=True)
    return faces


def largest_face(image_rgb: np.ndarray, refine_eyes: bool = True) -> FaceGeometry | None:
    """The largest frontal face in the image, or None."""
    faces = detect_faces(image_rgb, refine_eyes=refine_eyes)
    return faces[0] if faces else None


def has_landmarks(face: FaceGeometry) -> bool:
    """Whether the geometry carries real landmarks (the default is all zeros)."""
    lm = np.asarray(face.landmarks)
    return lm.shape == (5, 2) and bool(np.any(lm != 0)) and bool(np.all(np.isfinite(lm)))
