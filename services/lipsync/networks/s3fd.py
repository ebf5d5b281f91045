"""S3FD face detector (Zhang et al., ICCV 2017, "S³FD: Single Shot Scale-invariant Face Detector"),
as the port that Wav2Lip vendors from the face-alignment project runs it.

Wav2Lip finds the face box of every frame with this network, so its boxes (and therefore the
crops the generator sees) depend on reproducing it exactly. A VGG-16 trunk feeds six detection
sources (strides 4 … 128) with one 3x3 classification head and one 3x3 box head each:

* the port's ``fc6`` is a plain 3x3 conv with padding 3 (the paper's is dilated), so from level 4
  on the maps are (H/32 + 4) x (W/32 + 4), then halved twice;
* ``conv3_3``, ``conv4_3``, ``conv5_3`` are L2-normalised across channels with a learnt
  per-channel scale (initial 10, 8, 5) before their heads, because their activations are much
  larger than the deeper sources';
* the first classification head predicts 3 background scores and 1 face score and keeps the
  maximum background ("max-out", the paper's remedy for the many small negative anchors).

Post-processing (softmax, anchors of side 4·stride, SSD box decoding with variances 0.1/0.2,
greedy NMS at IoU 0.3 with the "+1" pixel area, score cut 0.5) is vectorised here: the
official code loops in Python over every anchor above 0.05, which with random weights is
nearly all of them.

Our own module; its state_dict names equal ``s3fd.pth``'s (a plain state dict, no prefix).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.services.common.checkpoints import load_strict, read_checkpoint

# Network input is the RGB frame minus these means, in this order (R-104, G-117, B-123).
PIXEL_MEAN_RGB = (104.0, 117.0, 123.0)
ANCHOR_SCALE = 4  # square anchors of side 4 * stride
VARIANCES = (0.1, 0.2)  # centre offset, log size (SSD encoding)
CANDIDATE_THRESHOLD = 0.05  # face probability for an anchor to become a candidate
NMS_IOU = 0.3
SCORE_THRESHOLD = 0.5  # detections kept after NMS score strictly above this
NORM_BLOCKS = (3, 4, 5)  # VGG blocks whose last conv is a (L2-normalised) detection source


@dataclass
class S3FDConfig:
    """Layer widths of the released ``s3fd.pth``; only the defaults load that checkpoint."""

    in_channels: int = 3
    vgg_widths: tuple[int, ...] = (64, 128, 256, 512, 512)
    vgg_depths: tuple[int, ...] = (2, 2, 3, 3, 3)
    fc_width: int = 1024
    fc6_padding: int = 3  # no dilation in this port: every level-4+ map grows by 4
    extra_widths: tuple[tuple[int, int], ...] = ((256, 512), (128, 256))  # conv6_*, conv7_*
    l2norm_scales: tuple[float, ...] = (10.0, 8.0, 5.0)  # conv3_3, conv4_3, conv5_3
    l2norm_eps: float = 1e-10
    first_conf_channels: int = 4  # 3 background (max-out) + 1 face


class L2Norm(nn.Module):
    """x / (‖x‖₂ over channels + eps) · weight[c]: evens out the scale of shallow sources."""

    def __init__(self, channels: int, scale: float, eps: float = 1e-10) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight.view(1, -1, 1, 1)


class S3FD(nn.Module):
    """[B, 3, H, W] mean-subtracted RGB → [cls1, reg1, …, cls6, reg6] (logits, box offsets)."""

    def __init__(self, config: S3FDConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or S3FDConfig()
        # Registration order is the checkpoint's state_dict order: trunk, extras, norms, heads.
        cin = cfg.in_channels
        for block, (width, depth) in enumerate(zip(cfg.vgg_widths, cfg.vgg_depths, strict=True), 1):
            for i in range(1, depth + 1):
                setattr(self, f"conv{block}_{i}", nn.Conv2d(cin, width, 3, padding=1))
                cin = width
        self.fc6 = nn.Conv2d(cin, cfg.fc_width, 3, padding=cfg.fc6_padding)
        self.fc7 = nn.Conv2d(cfg.fc_width, cfg.fc_width, 1)
        cin = cfg.fc_width
        for block, (mid, out) in enumerate(cfg.extra_widths, 6):
            setattr(self, f"conv{block}_1", nn.Conv2d(cin, mid, 1))
            setattr(self, f"conv{block}_2", nn.Conv2d(mid, out, 3, stride=2, padding=1))
            cin = out

        # The three normalised sources are the last conv of VGG blocks 3, 4, 5.
        for block, scale in zip(NORM_BLOCKS, cfg.l2norm_scales, strict=True):
            norm = L2Norm(cfg.vgg_widths[block - 1], scale, cfg.l2norm_eps)
            setattr(self, f"conv{block}_{cfg.vgg_depths[block - 1]}_norm", norm)

        extras = range(6, 6 + len(cfg.extra_widths))
        self.head_names = [f"conv{b}_{cfg.vgg_depths[b - 1]}_norm" for b in NORM_BLOCKS]
        self.head_names += ["fc7"] + [f"conv{b}_2" for b in extras]
        source_widths = [cfg.vgg_widths[b - 1] for b in NORM_BLOCKS]
        source_widths += [cfg.fc_width] + [out for _, out in cfg.extra_widths]
        for level, (name, width) in enumerate(zip(self.head_names, source_widths, strict=True)):
            conf = cfg.first_conf_channels if level == 0 else 2
            setattr(self, f"{name}_mbox_conf", nn.Conv2d(width, conf, 3, padding=1))
            setattr(self, f"{name}_mbox_loc", nn.Conv2d(width, 4, 3, padding=1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        cfg = self.config
        sources: list[torch.Tensor] = []
        for block, depth in enumerate(cfg.vgg_depths, 1):
            for i in range(1, depth + 1):
                x = F.relu(getattr(self, f"conv{block}_{i}")(x))
            if block in NORM_BLOCKS:  # taken before the pooling
                sources.append(getattr(self, f"conv{block}_{depth}_norm")(x))
            x = F.max_pool2d(x, 2, 2)
        x = F.relu(self.fc6(x))
        x = F.relu(self.fc7(x))
        sources.append(x)
        for block in range(6, 6 + len(cfg.extra_widths)):
            x = F.relu(getattr(self, f"conv{block}_1")(x))
            x = F.relu(getattr(self, f"conv{block}_2")(x))
            sources.append(x)

        maps: list[torch.Tensor] = []
        for level, (name, source) in enumerate(zip(self.head_names, sources, strict=True)):
            cls = getattr(self, f"{name}_mbox_conf")(source)
            if level == 0:  # max-out background: [max(bg0, bg1, bg2), face]
                background = cls[:, :-1].amax(dim=1, keepdim=True)
                cls = torch.cat([background, cls[:, -1:]], dim=1)
            maps += [cls, getattr(self, f"{name}_mbox_loc")(source)]
        return maps


def s3fd_keys_from_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map ``s3fd.pth`` keys to ours: the identity, because our attribute names reproduce the
    official ones (``conv1_1`` … ``conv7_2_mbox_loc``); a ``module.`` prefix, if a re-saved copy
    carries one, is stripped."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def load_s3fd(path: Path) -> S3FD:
    """S3FD with the weights of an official ``s3fd.pth`` (read on CPU, strict)."""
    state = read_checkpoint(path)
    net = load_strict(S3FD(), s3fd_keys_from_official(state), str(path))
    return net.eval()


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
