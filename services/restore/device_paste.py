"""GFPGAN's per-frame work around the network as torch operations on the engine's device.

The alignment warp (frame -> 512 crop), the network's input and output conversions, the
``weight`` blend, the parser's input, the inverse warp of the restored face and of its soft
mask, and the truncating blend into the frame, batched over the faces of a batch; the frames
go to the device once and come back once. Also on the device: the parse mask's two
101 px float64 Gaussian blurs (``parse_face_masks``), so the parser's classes never leave
it. On the host only the 2x3 matrices (LMedS, a few microseconds).

The engine uses this path on cuda and mps; on a CPU it keeps the host path (numpy/OpenCV):
measured on this 2-core CPU, interleaved, 720p frame with a 512 face, parse mask, batch of
4 (the networks left out): host 125 ms/frame against 196 ms with one torch thread, and
141 against 641 with two threads while the cores were shared (load 7): torch's thread pool
does badly under contention, and a CPU gains nothing from keeping the frame "on the device".

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

Bound against the formula: 0 counts where the device computes in float64 (cpu, cuda) for
everything but the parse mask's blur: measured bit-identical, and tests/test_device_paste.py
asserts it (cuda runs there only when present: not run yet, no GPU was lent). ``weight`` < 1
follows OpenCV's ``addWeighted`` (float32, rounded, saturated): measured identical on the
pack's frames (tests/test_gfpgan_engine.py), though OpenCV's SIMD may order its two products
otherwise (1 count at most). The blur (``parse_face_masks``) sums its 101 taps in one fixed
order (OpenCV's generic separable filter's: rows tap by tap, columns centre first, then
symmetric pairs); OpenCV itself dispatches by CPU (SSE/AVX2/AVX-512, IPP), so its last bits
are not the same on every machine either. The masks differ by at most ~1e-15; a pasted
value changes only where the blend lands that close to an integer before truncation: at
most 1 count, on a few pixels in a million (tests/test_device_paste.py bounds both). mps
has no float64: the crop, positions, blur and blend run in float32 there and can move a
value by about 1 count (not measured: no such device).
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


def _pad(src: torch.Tensor, border: tuple[float, ...] | float) -> torch.Tensor:
    """[N,H,W,C] → [N,H+4,W+4,C] with two pixels of constant border (same dtype): a sample
    whose taps are clamped to the pad reads the border (OpenCV's BORDER_CONSTANT)."""
    n, h, w, c = src.shape
    out = src.new_empty((n, h + 4, w + 4, c))
    out[...] = torch.tensor(border, dtype=src.dtype, device=src.device) if isinstance(
        border, tuple) else border
    out[:, 2:h + 2, 2:w + 2] = src
    return out


def _taps(padded: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor):
    """The 2x2 neighbourhood at integer positions ix, iy [N,h,w] (source coordinates) of a
    padded source [N,Hp,Wp,C]: four [N,h,w,C] tensors p00, p01, p10, p11, gathered as
    whole pixels (one row of C values per index) from the flattened batch."""
    n, hp, wp, c = padded.shape
    ix = ix.clamp(-2, wp - 4) + 2  # far outside: both taps on the border
    iy = iy.clamp(-2, hp - 4) + 2
    base = torch.arange(n, device=ix.device).view(n, *([1] * (ix.dim() - 1))) * (hp * wp)
    index = (iy * wp + ix + base).reshape(-1)
    flat = padded.reshape(n * hp * wp, c)
    shape = tuple(ix.shape) + (c,)
    return [flat.index_select(0, index + off).reshape(shape) for off in (0, 1, wp, wp + 1)]


# ---- the crop: face_align.warp_bilinear, batched ----------------------------------------


def warp_crops(frames: torch.Tensor, matrices: list[np.ndarray], border: tuple[int, ...],
               size: int = FACE_SIZE) -> torch.Tensor:
    """Aligned crops [N,size,size,C] (float, integer values, round half to even) of
    ``frames`` [N,H,W,C] uint8 on the device, ``matrices`` frame → crop.

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
    ax, ay = (ax - fx).unsqueeze(-1), (ay - fy).unsqueeze(-1)
    p00, p01, p10, p11 = _taps(_pad(frames, tuple(border)), fx.long(), fy.long())
    # differences of uint8 values are exact in int16: the same float64 values, fewer copies
    top = (p01.short() - p00.short()).to(dtype).mul_(ax).add_(p00)
    out = (p11.short() - p10.short()).to(dtype).mul_(ax).add_(p10)
    return torch.round_(out.sub_(top).mul_(ay).add_(top))


def crops_to_input(crops: torch.Tensor) -> torch.Tensor:
    """face_tensors.face_to_input for RGB crops [N,H,W,3] already on the device: /255 in
    float64 (float32 on mps), to float32, (x − 0.5)/0.5; [N,3,H,W] out."""
    x = (crops.to(float_dtype(crops.device)) / 255.0).to(torch.float32)
    return ((x - 0.5) / 0.5).permute(0, 3, 1, 2).contiguous()


def output_to_faces(image: torch.Tensor) -> torch.Tensor:
    """face_tensors.output_to_face on the device: clamp, (x + 1)/2, ×255 in float32, round
    half to even; float32 [N,H,W,3] with integer values 0..255."""
    x = image.to(torch.float32).clamp(-1, 1)
    return torch.round((x + 1) / 2 * 255.0).permute(0, 2, 3, 1)


def blend_with_crops(faces: torch.Tensor, crops: torch.Tensor, weight: float) -> torch.Tensor:
    """cv2.addWeighted(faces, weight, crops, 1 − weight, 0) for uint8 values: float32,
    rounded to nearest, saturated."""
    out = faces.to(torch.float32) * weight + crops.to(torch.float32) * (1.0 - weight)
    return torch.round(out).clamp_(0, 255)


# ---- the paste-back: OpenCV 4's warpAffine, region by region ---------------------------


def _fixed_positions(inverses: list[np.ndarray], regions: list[tuple[int, int, int, int]],
                     rh: int, rw: int, device: torch.device):
    """warpAffine's source positions of the dst pixels of each region (padded to rh x rw)
    for ``inverses`` (crop → frame), in 1/32 pixel as OpenCV 4 computes them: (ix, iy, fx,
    fy), int64 [N,rh,rw], on the device (float64 then integers; on mps float32, which can
    move a position by 1/32 pixel)."""
    dtype = float_dtype(device)
    m = torch.tensor(np.stack([_invert(inv).ravel() for inv in inverses]), dtype=dtype,
                     device=device)  # frame → crop: where each frame pixel samples the face
    origin = torch.tensor([(x0, y0) for y0, _, x0, _ in regions], dtype=dtype, device=device)
    xs = torch.arange(rw, dtype=dtype, device=device) + origin[:, :1]  # [N,rw]
    ys = torch.arange(rh, dtype=dtype, device=device) + origin[:, 1:]  # [N,rh]
    round_delta = AB_SCALE // INTER_TAB // 2

    def cv_round(v):  # cvRound: to nearest, half to even
        return torch.round(v).long()

    adelta = cv_round(m[:, 0:1] * xs * AB_SCALE)
    bdelta = cv_round(m[:, 3:4] * xs * AB_SCALE)
    x_row = cv_round((m[:, 1:2] * ys + m[:, 2:3]) * AB_SCALE) + round_delta
    y_row = cv_round((m[:, 4:5] * ys + m[:, 5:6]) * AB_SCALE) + round_delta
    big_x = (x_row[:, :, None] + adelta[:, None, :]) >> (AB_BITS - INTER_BITS)
    big_y = (y_row[:, :, None] + bdelta[:, None, :]) >> (AB_BITS - INTER_BITS)
    return (big_x >> INTER_BITS, big_y >> INTER_BITS,
            big_x & (INTER_TAB - 1), big_y & (INTER_TAB - 1))


def paste_faces(frames: torch.Tensor, faces: torch.Tensor, inverses: list[np.ndarray],
                masks: torch.Tensor | list, square: bool = False) -> torch.Tensor:
    """Composite restored faces into their frames, as face_align.paste_face: uint8 out.

    frames [N,H,W,3] uint8 and faces [N,S,S,3] (integer values) on the device, one face per
    entry (a frame with two faces comes twice: the caller pastes them in turn). ``masks``
    are the 0..1 soft masks in face coordinates [N,S,S] (the parse mask before its warp) or,
    with ``square``, facexlib's (eroded, soft) masks already in frame coordinates
    (face_align.square_soft_mask), as a list of host arrays.

    Only the face's region (face_align.face_region) is computed; outside it the blend gives
    the frame back unchanged. The regions of the batch are padded to the largest one so the
    warp is one gather per tap over the batch.
    """
    device, dtype = frames.device, float_dtype(frames.device)
    n, height, width, _ = frames.shape
    size = faces.shape[1]
    regions = [face_region(inv, size, height, width) for inv in inverses]
    rh = max(max(y1 - y0 for y0, y1, _, _ in regions), 1)
    rw = max(max(x1 - x0 for _, _, x0, x1 in regions), 1)
    ix, iy, fx, fy = _fixed_positions(inverses, regions, rh, rw, device)
    # uint8 face: OpenCV's integer weights (2**15 in all), (Σ w·p + 2**14) >> 15, in int32
    wx1, wy1 = fx.int().unsqueeze(-1), fy.int().unsqueeze(-1)
    wx0, wy0 = INTER_TAB - wx1, INTER_TAB - wy1
    scale = 1 << (COEF_BITS - 2 * INTER_BITS)
    p00, p01, p10, p11 = (t.int() for t in _taps(_pad(faces.to(torch.uint8), 0), ix, iy))
    warped = ((p00 * (wy0 * wx0 * scale) + p01 * (wy0 * wx1 * scale)
               + p10 * (wy1 * wx0 * scale) + p11 * (wy1 * wx1 * scale)
               + (1 << (COEF_BITS - 1))) >> COEF_BITS)
    if square:
        # as numpy computes facexlib's formula here: float32 masks, so float32 products
        dtype = torch.float32
        host = np.zeros((2, n, rh, rw, 1), np.float32)
        for k, ((y0, y1, x0, x1), (er, so)) in enumerate(zip(regions, masks, strict=True)):
            host[0, k, :y1 - y0, :x1 - x0, 0] = er[y0:y1, x0:x1]
            host[1, k, :y1 - y0, :x1 - x0, 0] = so[y0:y1, x0:x1]
        eroded, mask = torch.from_numpy(host).to(device)
        warped = eroded * warped.to(dtype)
    else:
        if isinstance(masks, list):
            masks = torch.from_numpy(np.stack(masks)).to(device, dtype)
        # float mask: OpenCV's float32 weights (fractions of 32: exact), summed as it sums
        area = INTER_TAB * INTER_TAB
        fx, fy = fx.unsqueeze(-1), fy.unsqueeze(-1)
        m00, m01, m10, m11 = _taps(_pad(masks.to(dtype).unsqueeze(-1), 0.0), ix, iy)
        mask = m00 * (((INTER_TAB - fy) * (INTER_TAB - fx)).to(dtype) / area)
        mask += m01 * (((INTER_TAB - fy) * fx).to(dtype) / area)
        mask += m10 * ((fy * (INTER_TAB - fx)).to(dtype) / area)
        mask += m11 * ((fy * fx).to(dtype) / area)
        warped = warped.to(dtype)
    out = frames.clone()
    for k, (y0, y1, x0, x1) in enumerate(regions):
        if y1 <= y0 or x1 <= x0:
            continue
        m = mask[k, :y1 - y0, :x1 - x0]
        bg = frames[k, y0:y1, x0:x1].to(dtype)
        blended = m * warped[k, :y1 - y0, :x1 - x0] + (1 - m) * bg
        out[k, y0:y1, x0:x1] = blended.to(torch.uint8)  # truncation, as the official code
    return out


# ---- the parse mask: face_align.parse_face_mask on the device ---------------------------

BLUR_SIZE, BLUR_SIGMA, MASK_BORDER = 101, 11, 10


def gaussian_taps(device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """OpenCV's 101-tap, sigma-11 Gaussian kernel (cv2.getGaussianKernel, float64)."""
    import cv2

    taps = cv2.getGaussianKernel(BLUR_SIZE, BLUR_SIGMA, cv2.CV_64F).ravel()
    return torch.tensor(taps, dtype=dtype, device=device)


def _blur_rows(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Each row of [N,H,W] convolved with ``taps``, reflect-101 border, taps summed one by
    one from the left (OpenCV's generic row filter)."""
    half, width = len(taps) // 2, x.shape[-1]
    padded = torch.nn.functional.pad(x.unsqueeze(1), (half, half, 0, 0), mode="reflect")[:, 0]
    out = padded[..., 0:width] * taps[0]
    term = torch.empty_like(out)
    for j in range(1, len(taps)):  # a multiply then an add: no fused multiply-add
        out += torch.mul(padded[..., j:j + width], taps[j], out=term)
    return out


def _blur_columns(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Each column convolved with the symmetric ``taps``, reflect-101 border: the centre
    tap first, then each pair of rows at equal distance, added before weighting (OpenCV's
    symmetric column filter)."""
    half, height = len(taps) // 2, x.shape[-2]
    padded = torch.nn.functional.pad(x.unsqueeze(1), (0, 0, half, half), mode="reflect")[:, 0]
    out = padded[:, half:half + height] * taps[half]
    term = torch.empty_like(out)
    for j in range(1, half + 1):
        torch.add(padded[:, half + j:half + j + height], padded[:, half - j:half - j + height],
                  out=term)
        out += term.mul_(taps[half + j])
    return out


def parse_face_masks(classes: torch.Tensor) -> torch.Tensor:
    """face_align.parse_face_mask for a batch of parser classes [N,S,S] (uint8, on the
    device): 0 on the non-face classes, 255 elsewhere, blurred twice (101 px, sigma 11),
    a 10 px border zeroed, /255; float64 [N,S,S] (float32 on mps). S is the face size, so
    the official resize to it is the identity."""
    from talkinghead.services.restore.face_align import NON_FACE_CLASSES

    dtype = float_dtype(classes.device)
    non_face = torch.isin(classes, torch.tensor(NON_FACE_CLASSES, device=classes.device))
    mask = torch.where(non_face, 0.0, 255.0).to(dtype)
    taps = gaussian_taps(classes.device, dtype)
    for _ in range(2):
        mask = _blur_columns(_blur_rows(mask, taps), taps)
    b = MASK_BORDER
    mask[:, :b] = 0
    mask[:, -b:] = 0
    mask[:, :, :b] = 0
    mask[:, :, -b:] = 0
    return mask / 255.0
