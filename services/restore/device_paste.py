"""GFPGAN's per-frame work around the network as torch operations on the engine's device.

The alignment warp (frame -> 512 crop), the network's input and output conversions, the
``weight`` blend, the inverse warp of the restored face and of its soft mask, and the
truncating blend into the frame, batched over the faces of a chunk, with no host round trip
between them on a GPU. Only the 2x3 matrices (LMedS, a few microseconds) and, on the CPU,
the soft mask's float64 blur (``face_align.parse_soft_mask``: OpenCV's blur is faster than
torch's convolution there) are computed on the host.

Equal to the host path, hence to facexlib's formula (tests/test_restore_paste.py), by
doing the same arithmetic rather than an approximation of it:

* the crop is ``face_align.warp_bilinear`` (exact float64 positions and weights, the
  operations in the same order, round half to even): bit-identical;
* the paste-back's warps are OpenCV 4's ``warpAffine`` as it computes them: the sample
  positions in fixed point (1/1024 pixel, then 1/32 pixel, rounded as ``cvRound``), the
  uint8 face with 15-bit integer weights and the float64 mask with OpenCV's float weights;
  the blend ``m·face + (1 − m)·background`` in float64, truncated;
* input/output conversions as ``face_tensors`` (float64 /255 then float32; clamp, ×255 in
  float32, round half to even).

Bound against the formula: 0 counts where the device computes in float64 (cpu, cuda):
measured bit-identical, and tests/test_device_paste.py asserts it. ``weight`` < 1 uses
OpenCV's ``addWeighted`` rounding in float32: at most 1 count on the crop blend, where
OpenCV's SIMD order of the two products differs. mps has no float64: there the positions
are the same integers, but the crop's float32 weights and the blend in float32 can move a
value by 1 count (not measured here: no such device).
"""

from __future__ import annotations

import numpy as np
import torch

from talkinghead.services.restore.face_align import FACE_SIZE, face_region

AB_BITS, INTER_BITS = 10, 5  # OpenCV's warpAffine fixed point: 1/1024, then 1/32 pixel
AB_SCALE, INTER_TAB = 1 << AB_BITS, 1 << INTER_BITS
COEF_BITS = 15  # INTER_REMAP_COEF_BITS: uint8 bilinear weights sum to 2**15


def float_dtype(device: torch.device | str) -> torch.dtype:
    """float64 where the device has it (cpu, cuda); mps computes in float32."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def _invert(matrix: np.ndarray) -> np.ndarray:
    """cv2.invertAffineTransform in float64 (what warpAffine does with its matrix)."""
    import cv2

    return cv2.invertAffineTransform(np.asarray(matrix, np.float64))


def _pad(src: torch.Tensor, border: torch.Tensor | float) -> torch.Tensor:
    """[N,C,H,W] → [N,C,H+4,W+4] with two pixels of constant border: a sample whose taps
    are clamped to the pad reads the border (OpenCV's BORDER_CONSTANT)."""
    n, c, h, w = src.shape
    out = src.new_empty((n, c, h + 4, w + 4))
    if isinstance(border, torch.Tensor):
        out[...] = border.view(1, c, 1, 1)
    else:
        out.fill_(border)
    out[:, :, 2:h + 2, 2:w + 2] = src
    return out


def _taps(padded: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor):
    """The 2x2 neighbourhood at integer positions ix, iy [N,h,w] (source coordinates) of a
    padded source: four [N,C,h,w] tensors p00, p01, p10, p11."""
    n, c, hp, wp = padded.shape
    ix = ix.clamp(-2, wp - 4) + 2  # far outside: both taps on the border
    iy = iy.clamp(-2, hp - 4) + 2
    index = (iy * wp + ix).reshape(n, 1, -1).expand(n, c, -1)
    flat = padded.reshape(n, c, -1)
    shape = (n, c) + tuple(ix.shape[1:])
    return [flat.gather(2, index + off).reshape(shape) for off in (0, 1, wp, wp + 1)]


# ---- the crop: face_align.warp_bilinear, batched ----------------------------------------


def warp_crops(frames: torch.Tensor, matrices: list[np.ndarray], border: tuple[int, ...],
               size: int = FACE_SIZE) -> torch.Tensor:
    """Aligned crops [N,C,size,size] (float, integer values, round half to even) of
    ``frames`` [N,C,H,W] uint8 on the device, ``matrices`` frame → crop.

    face_align.warp_face's exact float64 warp, same operations in the same order: on cpu
    and cuda bit-identical to it (the reference pack's crop within 1 count)."""
    dtype = float_dtype(frames.device)
    n = frames.shape[0]
    inv = torch.tensor(np.stack([_invert(m) for m in matrices]), dtype=dtype,
                       device=frames.device).view(n, 2, 3, 1, 1)
    xs = torch.arange(size, dtype=dtype, device=frames.device).view(1, 1, size)
    ys = torch.arange(size, dtype=dtype, device=frames.device).view(1, size, 1)
    ax = (inv[:, 0, 1] * ys + inv[:, 0, 2]) + inv[:, 0, 0] * xs  # as warp_bilinear
    ay = (inv[:, 1, 1] * ys + inv[:, 1, 2]) + inv[:, 1, 0] * xs
    fx, fy = torch.floor(ax), torch.floor(ay)
    ax, ay = (ax - fx).unsqueeze(1), (ay - fy).unsqueeze(1)
    padded = _pad(frames.to(dtype), torch.tensor(border, dtype=dtype, device=frames.device))
    p00, p01, p10, p11 = _taps(padded, fx.long(), fy.long())
    top = (p01 - p00) * ax + p00
    out = (p11 - p10) * ax + p10
    return torch.round((out - top) * ay + top)


def crops_to_input(crops: torch.Tensor) -> torch.Tensor:
    """face_tensors.face_to_input for RGB crops [N,3,H,W] already on the device: /255 in
    float64 (float32 on mps), to float32, (x − 0.5)/0.5."""
    x = (crops.to(float_dtype(crops.device)) / 255.0).to(torch.float32)
    return (x - 0.5) / 0.5


def output_to_faces(image: torch.Tensor) -> torch.Tensor:
    """face_tensors.output_to_face on the device: clamp, (x + 1)/2, ×255 in float32, round
    half to even; float32 [N,3,H,W] with integer values 0..255."""
    x = image.to(torch.float32).clamp(-1, 1)
    return torch.round((x + 1) / 2 * 255.0)


def blend_with_crops(faces: torch.Tensor, crops: torch.Tensor, weight: float) -> torch.Tensor:
    """cv2.addWeighted(faces, weight, crops, 1 − weight, 0) for uint8 values: float32,
    rounded to nearest, saturated."""
    out = faces.to(torch.float32) * weight + crops.to(torch.float32) * (1.0 - weight)
    return torch.round(out).clamp_(0, 255)


# ---- the paste-back: OpenCV 4's warpAffine, region by region ---------------------------


def _fixed_positions(inverse: np.ndarray, y0: int, y1: int, x0: int, x1: int):
    """warpAffine's source positions of the dst pixels [y0:y1, x0:x1] for ``inverse``
    (crop → frame), in 1/32 pixel as OpenCV 4 computes them: (ix, iy, fx, fy), int64."""
    m = _invert(inverse).ravel()  # frame → crop: where each frame pixel samples the face
    xs = np.arange(x0, x1, dtype=np.float64)
    ys = np.arange(y0, y1, dtype=np.float64)
    round_delta = AB_SCALE // INTER_TAB // 2
    adelta = np.rint(m[0] * xs * AB_SCALE).astype(np.int64)
    bdelta = np.rint(m[3] * xs * AB_SCALE).astype(np.int64)
    x_row = np.rint((m[1] * ys + m[2]) * AB_SCALE).astype(np.int64) + round_delta
    y_row = np.rint((m[4] * ys + m[5]) * AB_SCALE).astype(np.int64) + round_delta
    X = (x_row[:, None] + adelta[None, :]) >> (AB_BITS - INTER_BITS)
    Y = (y_row[:, None] + bdelta[None, :]) >> (AB_BITS - INTER_BITS)
    return X >> INTER_BITS, Y >> INTER_BITS, X & (INTER_TAB - 1), Y & (INTER_TAB - 1)


def paste_faces(frames: torch.Tensor, faces: torch.Tensor, inverses: list[np.ndarray],
                masks: torch.Tensor | list[np.ndarray], square: bool = False) -> torch.Tensor:
    """Composite restored faces into their frames, as face_align.paste_face: uint8 out.

    frames [N,3,H,W] uint8 and faces [N,3,S,S] (integer values) on the device, one face per
    entry (a frame with two faces comes twice: the caller pastes them in turn). ``masks``
    are the 0..1 soft masks in face coordinates [N,S,S] (the parse mask before its warp) or,
    with ``square``, facexlib's (eroded, soft) masks already in frame coordinates
    (face_align.square_soft_mask), as a list of host arrays.

    Only the face's region (face_align.face_region) is computed; outside it the blend gives
    the frame back unchanged. All regions of the batch are padded to the largest one so the
    warp is one gather per tap over the batch.
    """
    device, dtype = frames.device, float_dtype(frames.device)
    n, c, height, width = frames.shape
    size = faces.shape[-1]
    regions = [face_region(inv, size, height, width) for inv in inverses]
    rh = max(max(y1 - y0 for y0, y1, _, _ in regions), 1)
    rw = max(max(x1 - x0 for _, _, x0, x1 in regions), 1)
    pos = np.zeros((4, n, rh, rw), np.int64)
    pos[:2] = -2  # rows/columns beyond a smaller region sample the border: unused
    for k, ((y0, y1, x0, x1), inv) in enumerate(zip(regions, inverses, strict=True)):
        ix, iy, fx, fy = _fixed_positions(inv, y0, y1, x0, x1)
        pos[:, k, :y1 - y0, :x1 - x0] = ix, iy, fx, fy
    pos_t = torch.from_numpy(pos).to(device)
    ix, iy, fx, fy = pos_t[0], pos_t[1], pos_t[2], pos_t[3]
    # uint8 face: OpenCV's integer weights, (Σ w·p + 2**14) >> 15
    wx1, wy1 = fx.unsqueeze(1), fy.unsqueeze(1)
    wx0, wy0 = INTER_TAB - wx1, INTER_TAB - wy1
    scale = 1 << (COEF_BITS - 2 * INTER_BITS)
    p00, p01, p10, p11 = _taps(_pad(faces.to(torch.int64), 0), ix, iy)
    warped = ((p00 * (wy0 * wx0 * scale) + p01 * (wy0 * wx1 * scale)
               + p10 * (wy1 * wx0 * scale) + p11 * (wy1 * wx1 * scale)
               + (1 << (COEF_BITS - 1))) >> COEF_BITS).to(dtype)
    if square:
        # as numpy computes facexlib's formula here: float32 masks, so float32 products
        dtype = torch.float32
        soft = torch.zeros((n, 1, rh, rw), dtype=dtype, device=device)
        eroded = torch.zeros_like(soft)
        for k, ((y0, y1, x0, x1), (er, so)) in enumerate(zip(regions, masks, strict=True)):
            eroded[k, 0, :y1 - y0, :x1 - x0] = torch.from_numpy(
                np.ascontiguousarray(er[y0:y1, x0:x1], np.float32)).to(device)
            soft[k, 0, :y1 - y0, :x1 - x0] = torch.from_numpy(
                np.ascontiguousarray(so[y0:y1, x0:x1], np.float32)).to(device)
        warped = eroded * warped.to(dtype)
        mask = soft
    else:
        if isinstance(masks, list):
            masks = torch.from_numpy(np.stack(masks)).to(device, dtype)
        # float mask: OpenCV's float32 weights (fractions of 32: exact), summed in float64
        area = INTER_TAB * INTER_TAB
        w = [((INTER_TAB - fy) * (INTER_TAB - fx)).to(dtype) / area,
             ((INTER_TAB - fy) * fx).to(dtype) / area,
             (fy * (INTER_TAB - fx)).to(dtype) / area,
             (fy * fx).to(dtype) / area]
        m00, m01, m10, m11 = _taps(_pad(masks.to(dtype).unsqueeze(1), 0.0), ix, iy)
        mask = m00 * w[0].unsqueeze(1) + m01 * w[1].unsqueeze(1)
        mask = mask + m10 * w[2].unsqueeze(1)
        mask = mask + m11 * w[3].unsqueeze(1)
    out = frames.clone()
    for k, (y0, y1, x0, x1) in enumerate(regions):
        if y1 <= y0 or x1 <= x0:
            continue
        m = mask[k, :, :y1 - y0, :x1 - x0]
        bg = frames[k, :, y0:y1, x0:x1].to(dtype)
        blended = m * warped[k, :, :y1 - y0, :x1 - x0] + (1 - m) * bg
        out[k, :, y0:y1, x0:x1] = blended.to(torch.uint8)  # truncation, as the official code
    return out
