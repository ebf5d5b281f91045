"""Finding faces and their five landmarks with RetinaFace, as facexlib does for GFPGAN.

The network is ``networks/retinaface.py``. Decoding is the SSD encoding with variances
(0.1, 0.2); the landmarks are offsets from the anchor centre scaled like the box centre.
Post-processing is vectorised; NMS is greedy with box area (x2 − x1)(y2 − y1), as
torchvision's ``nms`` that facexlib calls.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from talkinghead.services.restore.networks.retinaface import RetinaFace, RetinaFaceConfig

# The network sees the BGR frame minus these means, in this order (B-104, G-117, R-123).
PIXEL_MEAN_BGR = (104.0, 117.0, 123.0)
GFPGAN_CONF_THRESHOLD = 0.97  # what FaceRestoreHelper passes (facexlib's own default is 0.8)
NMS_IOU = 0.4


# ---- input ---------------------------------------------------------------------------------

def preprocess(image: np.ndarray, color_order: Literal["rgb", "bgr"]) -> torch.Tensor:
    """uint8 frame [H, W, 3] in ``color_order`` → float32 [1, 3, H, W], BGR minus the means.

    facexlib feeds OpenCV's BGR frame at its own size (no resize, no 1/255): float32, then
    minus (104, 117, 123). Our frames are RGB, so the caller must say which it has.
    """
    if color_order not in ("rgb", "bgr"):
        raise ValueError(f"color_order must be 'rgb' or 'bgr', not {color_order!r}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an [H, W, 3] frame, got shape {image.shape}")
    if color_order == "rgb":
        image = image[..., ::-1]
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
    return (x - torch.tensor(PIXEL_MEAN_BGR).view(3, 1, 1))[None]


# ---- anchors, decoding, NMS ----------------------------------------------------------------

def prior_boxes(height: int, width: int, config: RetinaFaceConfig | None = None) -> torch.Tensor:
    """Anchors [P, 4] as (cx, cy, w, h) normalised by the image width/height, float32.

    Per level: rows, then columns, then the level's anchor sizes. Computed in float64 with
    the official operation order ((j + 0.5)·step / W) and rounded once, so it is exact.
    """
    cfg = config or RetinaFaceConfig()
    levels = []
    for step, sizes in zip(cfg.steps, cfg.min_sizes, strict=True):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cx = (np.arange(cols) + 0.5) * step / width
        cy = (np.arange(rows) + 0.5) * step / height
        grid = np.empty((rows, cols, len(sizes), 4))
        grid[..., 0] = cx[None, :, None]
        grid[..., 1] = cy[:, None, None]
        grid[..., 2] = np.asarray(sizes, dtype=np.float64) / width
        grid[..., 3] = np.asarray(sizes, dtype=np.float64) / height
        levels.append(grid.reshape(-1, 4))
    return torch.from_numpy(np.concatenate(levels).astype(np.float32))


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor, variances: tuple[float, float]) -> torch.Tensor:
    """[..., P, 4] offsets → corners (x1, y1, x2, y2), normalised. Centre moves by
    loc·v0·prior size, size scales by exp(loc·v1)."""
    centre = priors[..., :2] + loc[..., :2] * variances[0] * priors[..., 2:]
    size = priors[..., 2:] * torch.exp(loc[..., 2:] * variances[1])
    top_left = centre - size / 2
    return torch.cat([top_left, size + top_left], dim=-1)


def decode_landmarks(
    pre: torch.Tensor, priors: torch.Tensor, variances: tuple[float, float]
) -> torch.Tensor:
    """[..., P, 10] offsets → five (x, y) points, normalised, each like a box centre."""
    points = pre.unflatten(-1, (5, 2))
    decoded = priors[..., None, :2] + points * variances[0] * priors[..., None, 2:]
    return decoded.flatten(-2)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = NMS_IOU) -> np.ndarray:
    """Greedy NMS, highest score first; indices of the kept rows in that order.

    Area (x2 − x1)(y2 − y1) with no "+1"; a box is dropped when its IoU with a kept box is
    above the threshold. One vectorised step per kept box.
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    boxes = boxes.astype(np.float32, copy=False)
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(iou > iou_threshold)]
    return np.asarray(keep, dtype=np.int64)


def select_detections(
    loc: torch.Tensor,
    conf: torch.Tensor,
    landmarks: torch.Tensor,
    priors: torch.Tensor,
    image_size: tuple[int, int],
    conf_threshold: float = GFPGAN_CONF_THRESHOLD,
    nms_threshold: float = NMS_IOU,
    config: RetinaFaceConfig | None = None,
) -> np.ndarray:
    """One frame's raw outputs ([P, 4], [P, 2], [P, 10]) → detections [N, 15] float32.

    Rows are (x1, y1, x2, y2, score, x, y of the 5 landmarks) in pixels of ``image_size``
    (height, width), best first, not clipped to the image; score = face probability
    strictly above ``conf_threshold``, then greedy NMS.
    """
    cfg = config or RetinaFaceConfig()
    height, width = image_size
    scale = torch.tensor([width, height], dtype=torch.float32)
    boxes = decode_boxes(loc.float().cpu(), priors, cfg.variances) * scale.repeat(2)
    points = decode_landmarks(landmarks.float().cpu(), priors, cfg.variances) * scale.repeat(5)
    scores = conf[:, 1].float().cpu()
    chosen = torch.nonzero(scores > conf_threshold).flatten()
    boxes, points, scores = boxes[chosen].numpy(), points[chosen].numpy(), scores[chosen].numpy()
    keep = nms(boxes, scores, nms_threshold)
    return np.concatenate([boxes[keep], scores[keep, None], points[keep]], axis=1).astype(np.float32)


@torch.no_grad()
def detect(
    net: RetinaFace,
    image: np.ndarray,
    color_order: Literal["rgb", "bgr"],
    conf_threshold: float = GFPGAN_CONF_THRESHOLD,
    nms_threshold: float = NMS_IOU,
) -> np.ndarray:
    """Faces of one uint8 frame [H, W, 3] → [N, 15] as facexlib's ``detect_faces`` returns
    them at the frame's own size (``use_origin_size=True``, GFPGAN's call)."""
    device = next(net.parameters()).device
    x = preprocess(image, color_order).to(device)
    out = net(x)
    height, width = x.shape[-2:]
    priors = prior_boxes(height, width, net.config)
    return select_detections(
        out.loc[0], out.conf[0], out.landmarks[0], priors, (height, width), conf_threshold, nms_threshold,
        net.config,
    )
