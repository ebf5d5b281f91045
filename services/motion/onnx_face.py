"""The official LivePortrait source crop, from InsightFace's and LivePortrait's ONNX models.

LivePortrait (Guo et al., 2024) finds and crops the source face with three ONNX models:

1. ``det_10g.onnx``, InsightFace's SCRFD detector (Guo et al., 2021, "Sample and
   Computation Redistribution for Efficient Face Detection"): face boxes and five key
   points, decoded from anchor-free distances at strides 8, 16 and 32;
2. ``2d106det.onnx``, InsightFace's 106-point landmark regressor, run on a square of 1.5x
   the detected box;
3. ``landmark.onnx``, LivePortrait's own 203-point landmark model, run on a crop built
   from the 106 points (the 203 points give the eye and lip ratios of retargeting).

For a still photo (LivePortrait's ``Cropper.crop_source_image``) the crop is built from
the **106** points: the eye-centre-to-lip-centre axis fixes the rotation, the landmarks'
extent along that axis times 2.3 the side, and the centre moves by -0.125 of the side
along the face's downward axis (up, to take in the forehead). Video sources use the 203
points for the same construction; :func:`crop_from_landmarks` takes either.

All of this is optional. ``OnnxFaceAnalyzer.from_weights_dir`` returns None when
onnxruntime or a model file is missing, and the engine keeps the Haar-based crop of
``face_crop.crop_for_face``.

Colour order: our images are RGB. InsightFace is handed BGR, but both of its models go
through ``cv2.dnn.blobFromImage(..., swapRB=True)``, so they see RGB; LivePortrait's
landmark model is given the RGB photo directly. Every network here is therefore fed our
RGB pixels unswapped. Geometry is computed in float64 (upstream mixes float32 in; the
difference is far below a pixel).
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from talkinghead.services.common.errors import InputError
from talkinghead.services.common.frames import FaceGeometry
from talkinghead.services.motion.face_crop import CROP_SCALE, CROP_SHIFT_Y, NETWORK_SIZE, FaceCrop

log = logging.getLogger(__name__)

# The official ``pretrained_weights`` layout, relative to the weights directory.
DETECTOR_FILE = "insightface/models/buffalo_l/det_10g.onnx"
LANDMARK_106_FILE = "insightface/models/buffalo_l/2d106det.onnx"
LANDMARK_203_FILE = "liveportrait/landmark.onnx"
WEIGHT_FILES = (DETECTOR_FILE, LANDMARK_106_FILE, LANDMARK_203_FILE)

# SCRFD as LivePortrait's Cropper prepares it: det_size (512, 512) and crop_cfg.det_thresh
# 0.1 (InsightFace's own defaults are 640 and 0.5); NMS at InsightFace's 0.4.
DET_SIZE = 512
DET_THRESH = 0.1
NMS_THRESH = 0.4
DET_MEAN, DET_STD = 127.5, 128.0
STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2

# 2d106det: a square of 1.5x the box's longer side. The network normalises its input
# itself (InsightFace reads mean 0, std 1 for it), so it gets raw 0..255 pixels.
LANDMARK_106_SIZE = 192
LANDMARK_106_BOX_SCALE = 1.5
LANDMARK_106_COUNT = 106

# landmark.onnx: LivePortrait's LandmarkRunner crop, 224 px, 1.5x, vy_ratio -0.1, pixels
# in 0..1; the points are the third output, normalised to the crop side.
LANDMARK_203_SIZE = 224
LANDMARK_203_SCALE = 1.5
LANDMARK_203_SHIFT_Y = -0.1
LANDMARK_203_COUNT = 203
LANDMARK_203_OUTPUT = 2

CROP_SHIFT_X = 0.0  # crop_cfg.vx_ratio
UPSTREAM_CROP_SIZE = 512  # crop_cfg.dsize: upstream cuts at 512, then area-resizes to 256

# Landmarks averaged into (left eye, right eye, lip centre) per layout, as LivePortrait's
# parse_pt2_from_pt106 / _pt203 / _pt5 do.
EYE_LIP_INDICES: dict[int, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    106: ((33, 35, 40, 39), (87, 89, 94, 93), (52, 61)),
    203: ((0, 6, 12, 18), (24, 30, 36, 42), (48, 66)),
    5: ((0,), (1,), (3, 4)),
}


@dataclass(frozen=True, eq=False)
class Detection:
    """One SCRFD face: box and key points in photo pixels."""

    box: np.ndarray  # (4,) float64: x0, y0, x1, y1
    score: float
    kps: np.ndarray  # (5, 2) float64: left eye, right eye, nose tip, mouth corners

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


@dataclass(frozen=True, eq=False)
class OfficialFace:
    """Everything the official crop step finds for one photo."""

    detection: Detection
    landmarks_106: np.ndarray  # (106, 2) photo pixels
    landmarks_203: np.ndarray  # (203, 2) photo pixels (upstream's ``lmk_crop``)
    crop: FaceCrop  # photo → 256 px network crop

    @property
    def geometry(self) -> FaceGeometry:
        """The frame geometry: SCRFD's box and five points, and the crop transform."""
        return FaceGeometry(
            box=tuple(float(v) for v in self.detection.box),
            landmarks=self.detection.kps.astype(np.float32),
            crop_transform=self.crop.matrix.astype(np.float32),
            crop_size=self.crop.size,
        )


# ---------------------------------------------------------------- pure geometry


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2) points through a (2, 3) affine matrix."""
    matrix = np.asarray(matrix, np.float64)
    return np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]


def letterbox(image: np.ndarray, width: int, height: int) -> tuple[np.ndarray, float]:
    """The detector input: the photo resized to fit, top-left, on black; and its scale.

    As InsightFace's RetinaFace.detect: the fitting side is filled exactly, the other is
    truncated to whole pixels, and the one scale (from the heights) maps back.
    """
    rows, cols = image.shape[:2]
    if rows / cols > height / width:
        new_rows, new_cols = height, max(1, int(height / (rows / cols)))
    else:
        new_rows, new_cols = max(1, int(width * (rows / cols))), width
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[:new_rows, :new_cols] = cv2.resize(image, (new_cols, new_rows))
    return canvas, new_rows / rows


@functools.lru_cache(maxsize=32)
def anchor_centres(rows: int, cols: int, stride: int, per_cell: int = ANCHORS_PER_CELL) -> np.ndarray:
    """(rows * cols * per_cell, 2) anchor centres (x, y), row-major, each cell's anchors
    adjacent: the order of SCRFD's flattened outputs."""
    ys, xs = np.mgrid[:rows, :cols]
    centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float64) * stride
    centres = np.repeat(centres, per_cell, axis=0)
    centres.flags.writeable = False
    return centres


def decode_level(scores: np.ndarray, distances: np.ndarray, kps_distances: np.ndarray,
                 centres: np.ndarray, stride: int, threshold: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One stride's outputs → (scores (n,), boxes (n, 4), kps (n, 5, 2)) above threshold.

    SCRFD predicts, per anchor, distances in strides from the anchor centre: to the box's
    left, top, right and bottom sides, and to each key point (dx, dy).
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    distances = np.asarray(distances, np.float64).reshape(-1, 4) * stride
    kps_distances = np.asarray(kps_distances, np.float64).reshape(-1, 10) * stride
    if not len(scores) == len(distances) == len(kps_distances) == len(centres):
        raise RuntimeError(f"SCRFD stride {stride}: {len(scores)} scores, {len(distances)} boxes, "
                           f"{len(kps_distances)} key point sets for {len(centres)} anchors")
    keep = scores >= threshold
    centres, distances, kps_distances = centres[keep], distances[keep], kps_distances[keep]
    boxes = np.concatenate([centres - distances[:, :2], centres + distances[:, 2:]], axis=1)
    kps = centres[:, None, :] + kps_distances.reshape(-1, 5, 2)
    return scores[keep], boxes, kps


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float = NMS_THRESH) -> list[int]:
    """Greedy non-maximum suppression, best first; areas with InsightFace's +1 pixel."""
    x0, y0, x1, y1 = (boxes[:, i] for i in range(4))
    areas = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        w = np.maximum(0.0, np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]) + 1)
        overlap = w * h / (areas[best] + areas[rest] - w * h)
        order = rest[overlap <= threshold]
    return keep


def eye_and_lip(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eye centre (mean of both eyes) and lip centre of a 106, 203 or 5 point layout."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if len(pts) not in EYE_LIP_INDICES:
        raise ValueError(f"no eye/lip layout for {len(pts)} landmarks (106, 203 or 5)")
    left, right, lip = (pts[list(idx)].mean(axis=0) for idx in EYE_LIP_INDICES[len(pts)])
    return (left + right) / 2.0, lip


def crop_matrix(points: np.ndarray, size: int, scale: float, shift_x: float = 0.0,
                shift_y: float = 0.0) -> np.ndarray:
    """(2, 3) photo → crop similarity of LivePortrait's crop_image, from landmarks.

    The face's downward axis runs from the eye centre to the lip centre; its right axis is
    that turned 90° anticlockwise on screen. The square's side is ``scale`` times the
    landmarks' larger extent along those axes, its centre their extent's centre moved by
    ``shift_x``/``shift_y`` sides along them (negative y: up).
    """
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    eye, lip = eye_and_lip(pts)
    down = lip - eye
    length = float(np.linalg.norm(down))
    down = down / length if length > 1e-3 else np.array([0.0, 1.0])
    right = np.array([down[1], -down[0]])
    axes = np.stack([right, down])  # rows: the face's axes, in photo coordinates
    mean = pts.mean(axis=0)
    local = (pts - mean) @ axes.T
    low, high = local.min(axis=0), local.max(axis=0)
    side = float((high - low).max()) * scale
    if side <= 0:
        raise ValueError("landmarks have no extent")
    centre = mean + ((low + high) / 2.0) @ axes + (shift_x * right + shift_y * down) * side
    matrix = np.empty((2, 3))
    matrix[:, :2] = axes * (size / side)
    matrix[:, 2] = size / 2.0 - matrix[:, :2] @ centre
    return matrix


def crop_from_landmarks(points: np.ndarray, size: int = NETWORK_SIZE) -> FaceCrop:
    """The official source crop (crop_cfg: scale 2.3, vx 0, vy -0.125) from 106 or 203 points."""
    return FaceCrop(crop_matrix(points, size, CROP_SCALE, CROP_SHIFT_X, CROP_SHIFT_Y), size)


def upstream_cut(image_rgb: np.ndarray, crop: FaceCrop, work_size: int = UPSTREAM_CROP_SIZE) -> np.ndarray:
    """The crop's pixels as upstream makes them: a bilinear cut at 512 px on black, then an
    area resize (``FaceCrop.cut`` warps straight to the size, edges replicated)."""
    big = cv2.warpAffine(image_rgb, crop.scaled(work_size).matrix, (work_size, work_size),
                         flags=cv2.INTER_LINEAR)
    if crop.size == work_size:
        return big
    return cv2.resize(big, (crop.size, crop.size), interpolation=cv2.INTER_AREA)


def _rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB from RGB, RGBA or gray; InputError for anything else."""
    if not isinstance(image, np.ndarray) or image.size == 0 or image.dtype != np.uint8:
        raise InputError("image must be a non-empty uint8 numpy array")
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return np.ascontiguousarray(image[..., :3])
    raise InputError(f"image must be (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")


def _nchw(image: np.ndarray, offset: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """(H, W, 3) → (1, 3, H, W) float32 of (pixel - offset) * scale, channels as given."""
    blob = (image.astype(np.float32) - np.float32(offset)) * np.float32(scale)
    return np.ascontiguousarray(blob.transpose(2, 0, 1)[None])


def _static_side(session, default: int) -> tuple[int, int]:
    """(width, height) of a session's image input, or ``default`` where it is symbolic."""
    shape = session.get_inputs()[0].shape
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape[2:4]]
    if len(dims) == 2 and None not in dims:
        return dims[1], dims[0]
    return default, default


# ---------------------------------------------------------------- the analyzer


class OnnxFaceAnalyzer:
    """SCRFD + 106 + 203 landmarks through onnxruntime, for the official source crop.

    Holds no per-call state, and onnxruntime sessions may be run from several threads, so
    one analyzer can serve concurrent requests.
    """

    def __init__(self, detector, landmark_106, landmark_203, det_size: int = DET_SIZE,
                 det_thresh: float = DET_THRESH, nms_thresh: float = NMS_THRESH):
        """Sessions as ``onnxruntime.InferenceSession``s (anything with ``run`` and
        ``get_inputs``). A detector with a fixed input size keeps it, as upstream."""
        self.detector, self.landmark_106_net, self.landmark_203_net = detector, landmark_106, landmark_203
        self.det_input = _static_side(detector, det_size)
        self.det_thresh, self.nms_thresh = det_thresh, nms_thresh
        self.landmark_106_size = _static_side(landmark_106, LANDMARK_106_SIZE)[0]
        self.landmark_203_size = _static_side(landmark_203, LANDMARK_203_SIZE)[0]

    @classmethod
    def from_weights_dir(cls, weights_dir: str | Path | None,
                         providers: Sequence[str] | None = None) -> OnnxFaceAnalyzer | None:
        """The analyzer over the official layout, or None (logged) when it cannot run:
        no onnxruntime, a model file missing, or one that does not load or fit."""
        if weights_dir is None:
            log.info("official face crop off: no weights directory")
            return None
        try:
            ort = importlib.import_module("onnxruntime")
        except ImportError:
            log.info("official face crop off: onnxruntime is not installed")
            return None
        root = Path(weights_dir)
        paths = [root / name for name in WEIGHT_FILES]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            log.info("official face crop off: missing %s", ", ".join(missing))
            return None
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            sessions = [ort.InferenceSession(str(p), sess_options=options, providers=list(providers))
                        for p in paths]
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            log.warning("official face crop off: cannot load the ONNX models: %s", exc)
            return None
        problem = _check_sessions(*sessions)
        if problem:
            log.warning("official face crop off: %s", problem)
            return None
        log.info("official face crop on: InsightFace buffalo_l + LivePortrait landmark.onnx (%s)",
                 ", ".join(sessions[0].get_providers()))
        return cls(*sessions)

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        """Every face SCRFD finds, largest first (upstream's 'large-small' direction)."""
        image = _rgb(image_rgb)
        width, height = self.det_input
        canvas, det_scale = letterbox(image, width, height)
        blob = _nchw(canvas, DET_MEAN, 1.0 / DET_STD)  # RGB, as blobFromImage(swapRB) gives
        outputs = self.detector.run(None, {self.detector.get_inputs()[0].name: blob})
        levels = len(STRIDES)
        scores, boxes, kps = [], [], []
        for i, stride in enumerate(STRIDES):
            centres = anchor_centres(height // stride, width // stride, stride)
            s, b, k = decode_level(outputs[i], outputs[i + levels], outputs[i + 2 * levels],
                                   centres, stride, self.det_thresh)
            scores.append(s)
            boxes.append(b)
            kps.append(k)
        all_scores = np.concatenate(scores)
        all_boxes = np.concatenate(boxes) / det_scale
        all_kps = np.concatenate(kps) / det_scale
        found = [Detection(all_boxes[i], float(all_scores[i]), all_kps[i])
                 for i in nms(all_boxes, all_scores, self.nms_thresh)]
        return sorted(found, key=lambda d: d.area, reverse=True)

    def landmarks_106(self, image_rgb: np.ndarray, box: Sequence[float]) -> np.ndarray:
        """(106, 2) photo pixels from InsightFace's 2d106det on a square 1.5x the box."""
        image = _rgb(image_rgb)
        size = self.landmark_106_size
        x0, y0, x1, y1 = (float(v) for v in box[:4])
        scale = size / (max(x1 - x0, y1 - y0) * LANDMARK_106_BOX_SCALE)
        matrix = np.array([[scale, 0.0, size / 2.0 - scale * (x0 + x1) / 2.0],
                           [0.0, scale, size / 2.0 - scale * (y0 + y1) / 2.0]])
        patch = cv2.warpAffine(image, matrix, (size, size), borderValue=0.0)
        net = self.landmark_106_net
        pred = np.asarray(net.run(None, {net.get_inputs()[0].name: _nchw(patch)})[0], np.float64)
        pred = pred.reshape(-1, 2)
        if len(pred) < LANDMARK_106_COUNT:
            raise RuntimeError(f"2d106det gave {len(pred)} points, expected {LANDMARK_106_COUNT}")
        # outputs are in [-1, 1] over the patch; the last 106 rows are the points
        patch_pts = (pred[-LANDMARK_106_COUNT:] + 1.0) * (size // 2)
        return apply_affine(cv2.invertAffineTransform(matrix), patch_pts)

    def landmarks_203(self, image_rgb: np.ndarray, landmarks_106: np.ndarray) -> np.ndarray:
        """(203, 2) photo pixels from LivePortrait's landmark.onnx, on its crop of the 106."""
        image = _rgb(image_rgb)
        size = self.landmark_203_size
        matrix = crop_matrix(landmarks_106, size, LANDMARK_203_SCALE, 0.0, LANDMARK_203_SHIFT_Y)
        patch = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR)
        net = self.landmark_203_net
        outputs = net.run(None, {net.get_inputs()[0].name: _nchw(patch, 0.0, 1.0 / 255.0)})
        pred = np.asarray(outputs[LANDMARK_203_OUTPUT], np.float64).reshape(-1)
        if pred.size != 2 * LANDMARK_203_COUNT:
            raise RuntimeError(f"landmark.onnx gave {pred.size} values, expected {2 * LANDMARK_203_COUNT}")
        return apply_affine(cv2.invertAffineTransform(matrix), pred.reshape(-1, 2) * size)

    def analyze(self, image_rgb: np.ndarray) -> OfficialFace | None:
        """The largest face, its landmarks and the official crop; None when no face."""
        image = _rgb(image_rgb)
        faces = self.detect(image)
        if not faces:
            return None
        face = faces[0]
        points_106 = self.landmarks_106(image, face.box)
        points_203 = self.landmarks_203(image, points_106)
        return OfficialFace(face, points_106, points_203, crop_from_landmarks(points_106))

    def official_crop(self, image_rgb: np.ndarray) -> FaceCrop | None:
        """The 256 px crop LivePortrait's crop_source_image makes (``.scaled(512)`` gives
        its M_o2c exactly); None when no face is found."""
        face = self.analyze(image_rgb)
        return None if face is None else face.crop


def _check_sessions(detector, landmark_106, landmark_203) -> str | None:
    """Why these sessions are not the three expected models, or None."""
    n_det = len(detector.get_outputs())
    if n_det != 3 * len(STRIDES):
        return (f"{DETECTOR_FILE} has {n_det} outputs; expected SCRFD with key points "
                f"({3 * len(STRIDES)}: scores, boxes, key points at strides {STRIDES})")
    if len(landmark_106.get_inputs()[0].shape) != 4:
        return f"{LANDMARK_106_FILE} does not take an image batch"
    if len(landmark_203.get_outputs()) <= LANDMARK_203_OUTPUT:
        return f"{LANDMARK_203_FILE} has fewer than {LANDMARK_203_OUTPUT + 1} outputs"
    return None
