"""Finding Wav2Lip's face box with S3FD: the network's input, and decoding its raw maps.

The network itself is ``networks/s3fd.py``. Post-processing (softmax, anchors of side
4·stride, SSD box decoding with variances 0.1/0.2, greedy NMS at IoU 0.3 with the "+1"
pixel area, score cut 0.5) is vectorised here: the official code loops in Python over every
anchor above 0.05, which with random weights is nearly all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from talkinghead.services.lipsync.networks.s3fd import S3FD

# Network input is the RGB frame minus these means, in this order (R-104, G-117, B-123).
PIXEL_MEAN_RGB = (104.0, 117.0, 123.0)
ANCHOR_SCALE = 4  # square anchors of side 4 * stride
VARIANCES = (0.1, 0.2)  # centre offset, log size (SSD encoding)
CANDIDATE_THRESHOLD = 0.05  # face probability for an anchor to become a candidate
NMS_IOU = 0.3
SCORE_THRESHOLD = 0.5  # detections kept after NMS score strictly above this


# ---- input -----------------------------------------------------------------------------

def preprocess(frames: np.ndarray, color_order: Literal["rgb", "bgr"]) -> torch.Tensor:
    """uint8 frame(s) [H, W, 3] or [B, H, W, 3] in ``color_order`` → float32 [B, 3, H, W].

    The network wants RGB minus (104, 117, 123); Wav2Lip reads BGR with OpenCV and flips it,
    our frames are RGB already, so the caller must say which it has.
    """
    if color_order not in ("rgb", "bgr"):
        raise ValueError(f"color_order must be 'rgb' or 'bgr', not {color_order!r}")
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected [H, W, 3] or [B, H, W, 3] frames, got shape {frames.shape}")
    if color_order == "bgr":
        frames = frames[..., ::-1]
    # Subtract in float64 (exact for uint8 input), then round once to float32, as the port does.
    x = frames.astype(np.float64) - np.asarray(PIXEL_MEAN_RGB)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32))


# ---- post-processing -------------------------------------------------------------------

def decode_detections(
    maps: Sequence[torch.Tensor | np.ndarray], threshold: float = CANDIDATE_THRESHOLD
) -> list[np.ndarray]:
    """The 12 raw maps of a batch → per frame, candidates [N, 5] float32 (x1, y1, x2, y2, score).

    Every anchor whose face probability exceeds ``threshold``, level by level, row-major
    inside a level, decoded in float32 with the same operations (and so the same rounding)
    as the official per-anchor loop. The official batch code takes, for every frame, the
    union of the positions over the batch; the extra rows score ≤ ``threshold`` and can
    never survive NMS and the 0.5 cut, so each frame keeps only its own here.
    """
    if len(maps) % 2:
        raise ValueError("expected [cls1, reg1, …] pairs of maps")
    batch = int(maps[0].shape[0])
    rows: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    for level in range(len(maps) // 2):
        cls = torch.as_tensor(maps[2 * level]).float().cpu()
        reg = torch.as_tensor(maps[2 * level + 1]).float().cpu()
        face = F.softmax(cls, dim=1)[:, 1]  # [B, h, w]
        stride = 2 ** (level + 2)
        side = float(ANCHOR_SCALE * stride)
        height, width = face.shape[-2:]
        # Anchor centres, exact in float32 (half-integers times powers of two).
        cx = (stride / 2 + torch.arange(width, dtype=torch.float64) * stride).float()
        cy = (stride / 2 + torch.arange(height, dtype=torch.float64) * stride).float()
        cx, cy = cx.expand(height, width), cy[:, None].expand(height, width)
        for b in range(batch):
            ys, xs = torch.nonzero(face[b] > threshold, as_tuple=True)  # row-major order
            if ys.numel() == 0:
                continue
            loc = reg[b][:, ys, xs]  # [4, n]
            sides = torch.full_like(loc[0], side)
            # centre = anchor + (loc · 0.1) · side, size = side · exp(loc · 0.2), then corners.
            x1 = cx[ys, xs] + loc[0] * VARIANCES[0] * sides
            y1 = cy[ys, xs] + loc[1] * VARIANCES[0] * sides
            w = sides * torch.exp(loc[2] * VARIANCES[1])
            h = sides * torch.exp(loc[3] * VARIANCES[1])
            x1 = x1 - w / 2
            y1 = y1 - h / 2
            rows[b].append(torch.stack([x1, y1, w + x1, h + y1, face[b][ys, xs]], dim=1))
    return [
        torch.cat(r).numpy() if r else np.zeros((0, 5), dtype=np.float32) for r in rows
    ]


def nms(dets: np.ndarray, iou_threshold: float = NMS_IOU) -> np.ndarray:
    """Greedy NMS, highest score first; indices of the kept rows in that order.

    Areas use the "+1" pixel convention, (x2 − x1 + 1)(y2 − y1 + 1), and a box is suppressed
    when its IoU with a kept one exceeds the threshold. Each step is vectorised; the loop
    runs once per kept box.
    """
    if len(dets) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2, scores = (dets[:, i] for i in range(5))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]  # the official tie order (numpy's default sort, reversed)
    keep = []
    while order.size > 0:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def select_detections(
    candidates: np.ndarray, iou_threshold: float = NMS_IOU, score_threshold: float = SCORE_THRESHOLD
) -> np.ndarray:
    """Candidates → detections [M, 5]: NMS, then scores > ``score_threshold``, best first."""
    kept = candidates[nms(candidates, iou_threshold)]
    return kept[kept[:, 4] > score_threshold]


def best_face_box(detections: np.ndarray) -> tuple[int, int, int, int] | None:
    """The box Wav2Lip keeps: the best detection, negatives clipped to 0, truncated with int().

    No upper clip: a box may reach past the image; the crop stage clamps it.
    """
    if len(detections) == 0:
        return None
    x1, y1, x2, y2 = (int(v) for v in np.clip(detections[0, :4], 0, None))
    return x1, y1, x2, y2


@torch.no_grad()
def detect_faces(
    net: S3FD, frames: np.ndarray, color_order: Literal["rgb", "bgr"]
) -> list[tuple[int, int, int, int] | None]:
    """Best face box (x1, y1, x2, y2) of every frame of a batch, None where there is none."""
    device = next(net.parameters()).device
    maps = net(preprocess(frames, color_order).to(device))
    return [best_face_box(select_detections(c)) for c in decode_detections(maps)]
