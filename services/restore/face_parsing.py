"""Parsing a restored face into classes with ParseNet, for GFPGAN's paste-back mask.

The network is ``networks/parsenet.py``; the mask built from these classes is
``face_align.parse_soft_mask``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from talkinghead.services.restore.networks.parsenet import ParseNet

FACE_SIZE = 512  # the size GFPGAN resizes a restored face to before parsing


# ---- input ---------------------------------------------------------------------------------

def preprocess(faces: np.ndarray, color_order: Literal["rgb", "bgr"]) -> torch.Tensor:
    """uint8 face(s) [H, W, 3] or [B, H, W, 3] in ``color_order`` → float32 [B, 3, H, W],
    RGB in [−1, 1].

    As facexlib does it: float32, /255, to RGB, then (x − 0.5) / 0.5, all in float32. GFPGAN
    first resizes the face to 512² (a no-op for its own 512² output); that is the caller's.
    """
    if color_order not in ("rgb", "bgr"):
        raise ValueError(f"color_order must be 'rgb' or 'bgr', not {color_order!r}")
    faces = np.asarray(faces)
    if faces.ndim == 3:
        faces = faces[None]
    if faces.ndim != 4 or faces.shape[-1] != 3:
        raise ValueError(f"expected [H, W, 3] or [B, H, W, 3] faces, got shape {faces.shape}")
    if color_order == "bgr":
        faces = faces[..., ::-1]
    x = faces.astype(np.float32) / np.float32(255.0)
    x = (x - np.float32(0.5)) / np.float32(0.5)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@torch.no_grad()
def parse(net: ParseNet, faces: np.ndarray, color_order: Literal["rgb", "bgr"]) -> np.ndarray:
    """Per-pixel class labels [B, H, W] uint8 (argmax of the 19 logits) of uint8 face(s)."""
    device = next(net.parameters()).device
    logits = net(preprocess(faces, color_order).to(device)).mask
    # max(dim).indices is argmax (first index on ties) but 7x faster than argmax(dim=1)
    # over the channel axis on CPU (47 -> 6 ms per 512x512 face, bench/warm_profile.py)
    return torch.max(logits, dim=1).indices.to(torch.uint8).cpu().numpy()


@torch.no_grad()
def parse_tensor(net: ParseNet, faces: torch.Tensor) -> torch.Tensor:
    """``parse`` for RGB faces already on the net's device: [B,3,H,W] float with integer
    values 0..255 → classes [B,H,W] uint8 on that device (same float32 arithmetic)."""
    x = faces.to(torch.float32) / 255.0
    logits = net((x - 0.5) / 0.5).mask
    return torch.max(logits, dim=1).indices.to(torch.uint8)
