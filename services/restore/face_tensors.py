"""GFPGAN's tensors: aligned uint8 faces in, restored uint8 faces out.

The network (``networks/gfpgan.py``) wants RGB in −1..1, [N,3,512,512] float32, and gives
the same layout back unclamped; these two functions convert, with the arithmetic of
basicsr's ``img2tensor`` / ``tensor2img`` so inputs and outputs are bit-identical to the
official ``GFPGANer``'s.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

ColourOrder = Literal["rgb", "bgr"]


def face_to_input(face: np.ndarray, order: ColourOrder) -> torch.Tensor:
    """uint8 aligned face(s), [512,512,3] or [N,512,512,3] in colour ``order`` → network input
    [N,3,512,512] float32, RGB, −1..1.

    ``order`` is required because the two callers differ: our frames are RGB, GFPGANer's
    (OpenCV) are BGR. Arithmetic as basicsr's ``img2tensor`` path: /255 in float64, float32,
    then (x − 0.5)/0.5 in float32, so the input is bit-identical to the official one.
    """
    if order not in ("rgb", "bgr"):
        raise ValueError(f"colour order must be 'rgb' or 'bgr', not {order!r}")
    face = np.asarray(face)
    if face.dtype != np.uint8 or face.shape[-1] != 3 or face.ndim not in (3, 4):
        raise ValueError(f"expected uint8 [H,W,3] or [N,H,W,3], got {face.dtype} {face.shape}")
    x = (face.reshape(-1, *face.shape[-3:]) / 255.0).astype(np.float32)
    if order == "bgr":
        x = x[..., ::-1]
    x = (x - np.float32(0.5)) / np.float32(0.5)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def output_to_face(image: torch.Tensor, order: ColourOrder) -> np.ndarray:
    """Network output [N,3,H,W] (or [3,H,W]) → uint8 [N,H,W,3] (or [H,W,3]) in ``order``.

    As basicsr's ``tensor2img`` with min_max (−1, 1): clamp, (x + 1)/2, ×255 in float32,
    round half to even. Unlike it, the caller's tensor is left untouched.
    """
    if order not in ("rgb", "bgr"):
        raise ValueError(f"colour order must be 'rgb' or 'bgr', not {order!r}")
    x = image.detach().to("cpu", torch.float32).clamp(-1, 1)
    x = ((x + 1) / 2).numpy()
    x = np.moveaxis(x, -3, -1)
    if order == "bgr":
        x = x[..., ::-1]
    return np.round(x * np.float32(255.0)).astype(np.uint8)
