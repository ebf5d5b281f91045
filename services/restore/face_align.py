"""GFPGAN's face path around the network: align to FFHQ, and paste the result back.

Follows the official ``GFPGANer.enhance`` (Wang et al., 2021) through facexlib's
FaceRestoreHelper, step for step, so that real checkpoints give the official pictures:

1. a 4-DOF similarity from the five landmarks to the FFHQ 512 template (LMedS), and a
   bilinear warp of the frame to a 512x512 crop on a grey border;
2. after restoration, the inverse transform (scaled for an upscaled canvas, with facexlib's
   half-pixel shift), and a soft mask: the face parser's skin/feature classes blurred twice
   (default), or facexlib's eroded-and-blurred square;
3. the composite mask·face + (1 − mask)·background, truncated to uint8.

Colour order matters only for the warp's border fill and is explicit. The published path
ran on OpenCV 5; we have OpenCV 4 (5 dropped the Haar cascades the lite engines use), whose
estimator and uint8/float warps land elsewhere by more than the pack's tolerances. So the
alignment is OpenCV 5's estimator written out, and the crop and the square mask are sampled
exactly (float64), as OpenCV 5 interpolates in float. The paste-back's own warps (face,
parse mask) stay OpenCV's: they are checked against facexlib's formula as written.
"""

from __future__ import annotations

import math
from fractions import Fraction

import cv2
import numpy as np

FACE_SIZE = 512
# FFHQ five-point template at 512 px: left eye, right eye, nose, left/right mouth corner.
FFHQ_TEMPLATE_512 = np.array([
    [192.98138, 239.94708],
    [318.90277, 240.1936],
    [256.63416, 314.01935],
    [201.26117, 371.41043],
    [313.08905, 371.15118],
])
BORDER_BGR = (135, 133, 132)
# Face-parser classes that are not face (background, neck, cloth, hair, hat) → masked out.
NON_FACE_CLASSES = (0, 14, 16, 17, 18)


# ---- alignment: OpenCV 5's estimateAffinePartial2D(method=LMEDS), written out ------------
#
# The published helper calls cv2.estimateAffinePartial2D(landmarks, template, method=LMEDS)
# with its defaults (confidence 0.99, 10 refinement iterations). OpenCV 4's refinement
# converges to the least-squares similarity; OpenCV 5's does not. Its Levenberg-Marquardt
# solver (modules/3d/src/levmarq.cpp) adds geodesic acceleration: a second-order correction
# from finite differences with a step of 1e-4. The model is linear, so that correction is
# rounding noise divided by 1e-8, and it leaves the result up to ~2e-5 crop pixels from the
# least-squares fit (8e-6 on the pack's face). The published matrix thus depends on each
# rounding in the solver, and we follow OpenCV 5's arithmetic step by step: float32 points,
# its random 2-point subsets, its float32 LMedS scores, its Jacobi-SVD solve, its orders of
# summation, and the fused multiply-adds of its AVX2 build (the pack's machine; OpenCV 5
# without AVX2 lands 6e-6 from the published matrix). Checked against OpenCV 5.0 on the
# pack's landmarks and on 600 other sets (noisy, rotated, scaled, moved, a third of them
# with a gross outlier): equal to the bit.

_LMEDS_CONFIDENCE = 0.99
_LMEDS_MAX_ITERS = 2000
_LMEDS_OUTLIER_RATIO = 0.45  # the share of outliers LMedS sizes its search for
_REFINE_ITERATIONS = 10
_GEODESIC_STEP = 1e-4
_DBL_EPSILON = float(np.finfo(np.float64).eps)
_DBL_MIN = float(np.finfo(np.float64).tiny)


def alignment_matrix(landmarks_5: np.ndarray, face_size: int = FACE_SIZE) -> np.ndarray:
    """(2, 3) frame → crop similarity: LMedS over 2-point models, then a refinement on the
    inliers, as OpenCV 5's estimateAffinePartial2D(..., method=LMEDS) computes it."""
    src = np.asarray(landmarks_5, np.float64).reshape(-1, 2).astype(np.float32)
    dst = (FFHQ_TEMPLATE_512 * (face_size / 512.0)).astype(np.float32)
    found = lmeds_similarity(src, dst)
    if found is None:
        raise ValueError("cannot align: degenerate landmarks")
    params, inliers = found
    if len(src) > 2:
        params = refine_similarity(params, src[inliers], dst[inliers])
    a, b, tx, ty = params
    return np.array([[a, -b, tx], [b, a, ty]])


class _MultiplyWithCarry:
    """OpenCV's cv::RNG (multiply-with-carry on a 64-bit state). LMedS seeds it with all
    ones, so its subsets, and hence the result, are the same on every call."""

    def __init__(self, state: int = (1 << 64) - 1):
        self.state = state

    def below(self, n: int) -> int:
        self.state = (self.state & 0xFFFFFFFF) * 4164903690 + (self.state >> 32)
        return (self.state & 0xFFFFFFFF) % n


def _divide(a: float, b: float) -> float:
    """a / b as C computes it: ±inf or NaN where Python would raise."""
    if b != 0.0:
        return a / b
    if a == 0.0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _two_point_similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, ...] | None:
    """(a, b, tx, ty) of x' = a·x − b·y + tx, y' = b·x + a·y + ty through two point pairs."""
    (x1, y1), (x2, y2) = ((float(x), float(y)) for x, y in src)
    (u1, v1), (u2, v2) = ((float(u), float(v)) for u, v in dst)
    norm = (x1 - x2) * (x1 - x2) + (y1 - y2) * (y1 - y2)
    if norm == 0.0:
        return None
    d = 1.0 / norm
    a = d * ((u1 - u2) * (x1 - x2) + (v1 - v2) * (y1 - y2))
    b = d * ((v1 - v2) * (x1 - x2) - (u1 - u2) * (y1 - y2))
    tx = d * ((v1 - v2) * (x1 * y2 - x2 * y1) - (u1 * y2 - u2 * y1) * (y1 - y2)
              - (u1 * x2 - u2 * x1) * (x1 - x2))
    ty = d * (-(u1 - u2) * (x1 * y2 - x2 * y1) - (v1 * x2 - v2 * x1) * (x1 - x2)
              - (v1 * y2 - v2 * y1) * (y1 - y2))
    return a, b, tx, ty


def _squared_errors(params: tuple[float, ...], src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Per-point squared transfer error, in float32 as OpenCV scores LMedS models."""
    a, b, tx, ty = (np.float32(v) for v in params)
    ex = a * src[:, 0] + (-b) * src[:, 1] + tx - dst[:, 0]
    ey = b * src[:, 0] + a * src[:, 1] + ty - dst[:, 1]
    return ex * ex + ey * ey


def lmeds_similarity(src: np.ndarray, dst: np.ndarray
                     ) -> tuple[tuple[float, ...], np.ndarray] | None:
    """Least median of squares over random 2-point similarities: keep the model with the
    smallest median squared error, then call inliers the points within 2.5 robust sigmas.
    ``src``, ``dst``: float32 (n, 2). Returns (params, inlier mask), or None if degenerate."""
    n = len(src)
    if n < 2:
        return None
    if n == 2:
        params = _two_point_similarity(src, dst)
        return None if params is None else (params, np.ones(2, bool))
    # enough draws for a 99 % chance of one outlier-free pair at 45 % outliers: 13
    iters = _LMEDS_MAX_ITERS
    num = math.log(max(1.0 - _LMEDS_CONFIDENCE, _DBL_MIN))
    denom = math.log(1.0 - (1.0 - _LMEDS_OUTLIER_RATIO) ** 2)
    if denom < 0 and -num < _LMEDS_MAX_ITERS * -denom:
        iters = round(num / denom)
    rng = _MultiplyWithCarry()
    best, best_median = None, math.inf
    for _ in range(max(iters, 3)):
        first = rng.below(n)
        second = rng.below(n)
        while second == first:
            second = rng.below(n)
        params = _two_point_similarity(src[[first, second]], dst[[first, second]])
        if params is None:
            continue
        median = float(np.sort(_squared_errors(params, src, dst))[n // 2])
        if median < best_median:  # a NaN median never wins
            best, best_median = params, median
    if best is None:
        return None
    sigma = max(2.5 * 1.4826 * (1 + 5.0 / (n - 2)) * math.sqrt(best_median), 0.001)
    inliers = _squared_errors(best, src, dst) <= np.float32(sigma * sigma)
    return (best, inliers) if inliers.sum() >= 2 else None


def _fma(a: float, b: float, c: float) -> float:
    """a·b + c rounded once, as a fused multiply-add (exact rationals, then one rounding)."""
    return float(Fraction(a) * Fraction(b) + Fraction(c))


def _transpose_times(columns: list[list[float]], r: list[float]) -> list[float]:
    """Jᵀr summed as OpenCV's small gemm sums it: four interleaved partial sums, the tail
    added to the first, then ((s0 + s1) + s2) + s3."""
    out = []
    n = len(r)
    for col in columns:
        s = [0.0, 0.0, 0.0, 0.0]
        whole = n - n % 4
        for k in range(0, whole, 4):
            for lane in range(4):
                s[lane] += col[k + lane] * r[k + lane]
        for k in range(whole, n):
            s[0] += col[k] * r[k]
        out.append(s[0] + s[1] + s[2] + s[3])
    return out


def _sum_of_squares(values: list[float]) -> float:
    total = 0.0
    for v in values:
        total += v * v
    return total


def _hypot(a: float, b: float) -> float:
    """OpenCV's scaled hypot (not the correctly rounded math.hypot)."""
    a, b = abs(a), abs(b)
    if a > b:
        b /= a
        return a * math.sqrt(1 + b * b)
    if b > 0:
        a /= b
        return b * math.sqrt(1 + a * a)
    return 0.0


def _svd_solve(a: list[list[float]], rhs: list[float]) -> list[float]:
    """x with A·x = rhs for a small square A, as cv::solve(..., DECOMP_SVD): one-sided
    Jacobi rotations of Aᵀ's rows until they are orthogonal (their norms are the singular
    values w, the normalised rows Uᵀ), then x = V·diag(1/w)·Uᵀ·rhs."""
    n = len(a)
    rows = [[a[k][i] for k in range(n)] for i in range(n)]  # Aᵀ
    vt = [[float(i == k) for k in range(n)] for i in range(n)]
    w = [_sum_of_squares(row) for row in rows]
    for _ in range(max(n, 30)):
        changed = False
        for i in range(n - 1):
            for j in range(i + 1, n):
                p = 0.0
                for k in range(n):
                    p += rows[i][k] * rows[j][k]
                if abs(p) <= _DBL_EPSILON * 10 * math.sqrt(w[i] * w[j]):
                    continue
                p *= 2
                beta = w[i] - w[j]
                gamma = _hypot(p, beta)
                if beta < 0:
                    s = math.sqrt((gamma - beta) * 0.5 / gamma)
                    c = p / (gamma * s * 2)
                else:
                    c = math.sqrt((gamma + beta) / (gamma * 2))
                    s = p / (gamma * c * 2)
                ri, rj, vi, vj = rows[i], rows[j], vt[i], vt[j]
                rows[i] = [c * x + s * y for x, y in zip(ri, rj, strict=True)]
                rows[j] = [-s * x + c * y for x, y in zip(ri, rj, strict=True)]
                w[i], w[j] = _sum_of_squares(rows[i]), _sum_of_squares(rows[j])
                vt[i] = [c * x + s * y for x, y in zip(vi, vj, strict=True)]
                vt[j] = [c * y - s * x for x, y in zip(vi, vj, strict=True)]
                changed = True
        if not changed:
            break
    w = [math.sqrt(_sum_of_squares(row)) for row in rows]
    for i in range(n - 1):  # decreasing singular values
        j = i
        for k in range(i + 1, n):
            if w[j] < w[k]:
                j = k
        if j != i:
            w[i], w[j] = w[j], w[i]
            rows[i], rows[j] = rows[j], rows[i]
            vt[i], vt[j] = vt[j], vt[i]
    rows = [[t * (1 / s) for t in row] if s > _DBL_MIN else [0.0] * n
            for row, s in zip(rows, w, strict=True)]
    threshold = 0.0
    for s in w:
        threshold += s
    threshold *= _DBL_EPSILON * 2
    x = [0.0] * n
    for i in range(n):
        if abs(w[i]) <= threshold:
            continue
        proj = 0.0
        for j in range(n):
            proj += rows[i][j] * rhs[j]
        proj *= 1 / w[i]
        x = [xj + proj * v for xj, v in zip(x, vt[i], strict=True)]
    return x


def refine_similarity(params: tuple[float, ...], src: np.ndarray, dst: np.ndarray,
                      iterations: int = _REFINE_ITERATIONS) -> tuple[float, ...]:
    """Levenberg-Marquardt on the inliers' residuals, as OpenCV 5's LevMarq with geodesic
    acceleration. Damping λ·diag(JᵀJ), each term at least 1e-6, from λ = 1e-4: ×max(1/3,
    1 − (2q − 1)³) after a step of quality q, ×2, ×4, … after a rejected one. Each step gets
    half of the finite-difference second-order correction when that is the smaller of the
    two. Stops after ``iterations`` tries, or when the gradient, the squared step or the
    relative decrease of ‖r‖² falls below 1e-6."""
    points = [(float(x), float(y)) for x, y in src]
    targets = [(float(u), float(v)) for u, v in dst]
    columns = [[v for x, y in points for v in (x, y)],  # ∂r/∂(a, b, tx, ty), r = (rx, ry)…
               [v for x, y in points for v in (-y, x)],
               [v for _ in points for v in (1.0, 0.0)],
               [v for _ in points for v in (0.0, 1.0)]]
    # JᵀJ summed row after row, as OpenCV's mulTransposed does
    jtj = [[sum(p * q for p, q in zip(ci, cj, strict=True)) for cj in columns]
           for ci in columns]

    def residuals(h: list[float]) -> list[float]:
        out = []
        for (x, y), (u, v) in zip(points, targets, strict=True):
            out += [h[0] * x - h[1] * y + h[2] - u, h[1] * x + h[0] * y + h[3] - v]
        return out

    h = [float(v) for v in params]
    r = residuals(h)
    energy = _sum_of_squares(r)
    lam, up = 1e-4, 2.0
    tries, done = 0, False
    while not done:
        jtr = _transpose_times(columns, r)
        gradient = max(abs(g) for g in jtr)
        accepted = False
        while not accepted and not done:
            damp = [min(max(jtj[i][i] * lam, 1e-6), 1e32) for i in range(4)]
            lhs = [[jtj[i][k] + damp[i] if i == k else jtj[i][k] for k in range(4)]
                   for i in range(4)]
            step = _svd_solve(lhs, [-g for g in jtr])
            predicted = -0.5 * sum(step[i] * (jtr[i] - damp[i] * step[i]) for i in range(4))
            step_norm = _sum_of_squares(step)
            # geodesic term Jᵀ(r(h + δ·step) − r(h) − J·δ·step)/δ², with OpenCV's fused
            # scaleAdd and addWeighted (the cancellation these round decides the result)
            hg = _GEODESIC_STEP
            jtr_ahead = _transpose_times(columns, residuals([hi + si * hg for hi, si in
                                                             zip(h, step, strict=True)]))
            inv_h2 = 1.0 / (hg * hg)
            curvature = [_fma(_fma(jtr[i], hg - 1.0, jtr_ahead[i]), inv_h2,
                              ((hg * damp[i]) * step[i]) * inv_h2) for i in range(4)]
            correction = _svd_solve(lhs, [-c for c in curvature])
            if math.sqrt(_divide(_sum_of_squares(correction), _sum_of_squares(step))) < 1.0:
                step = [s + c * 0.5 for s, c in zip(step, correction, strict=True)]
            probe = [hi + si for hi, si in zip(h, step, strict=True)]
            r_probe = residuals(probe)
            probe_energy = _sum_of_squares(r_probe)
            decrease = energy - probe_energy
            if decrease < 0:
                lam *= up
                up *= 2.0
            else:
                accepted = True
                quality = _divide(decrease, predicted)
                lam *= max(1.0 / 3.0, 1.0 - (2.0 * quality - 1.0) ** 3)
                up = 2.0
                converged = (gradient < 1e-6 or step_norm < 1e-6
                             or _divide(decrease, probe_energy) < 1e-6)
                h, r, energy = probe, r_probe, probe_energy
            tries += 1
            done = tries >= iterations or lam >= 1e32 or (accepted and converged)
    return tuple(h)


# ---- warps ---------------------------------------------------------------------------------


def warp_bilinear(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int],
                  border: float | tuple[float, ...] = 0.0) -> np.ndarray:
    """cv2.warpAffine's bilinear warp (image → output through ``matrix``, constant border)
    sampled exactly: float64 positions, weights and result.

    OpenCV 4 rounds the positions to 1/32 pixel and, for uint8, the weights to fixed point;
    OpenCV 5, which made the pack, interpolates in float. On the pack's frame this lands
    within 1 count of its crop (14 of 786,432 values) and 2e-6 of its square masks, where
    OpenCV 4 is up to 3 counts (on 3.8 % of the values) and 1.2e-3 off."""
    width, height = size
    src_h, src_w = image.shape[:2]
    chans = image.shape[2:]
    # only output pixels whose sample can touch the image (the source grown by one pixel)
    # need work; the others are border
    corners = np.array([[-1, -1, 1], [src_w, -1, 1], [-1, src_h, 1], [src_w, src_h, 1]],
                       np.float64) @ np.asarray(matrix, np.float64).T
    x0 = min(max(math.floor(corners[:, 0].min()), 0), width)
    x1 = min(max(math.ceil(corners[:, 0].max()) + 1, 0), width)
    y0 = min(max(math.floor(corners[:, 1].min()), 0), height)
    y1 = min(max(math.ceil(corners[:, 1].max()) + 1, 0), height)
    out = None
    if (x0, y0, x1, y1) != (0, 0, width, height):
        out = np.empty((height, width) + chans, np.float64)
        out[...] = border
        if x0 >= x1 or y0 >= y1:
            return out
    inv = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
    xs = np.arange(x0, x1, dtype=np.float64)
    ys = np.arange(y0, y1, dtype=np.float64)[:, None]
    ax = np.add(inv[0, 1] * ys + inv[0, 2], inv[0, 0] * xs)  # sample positions…
    ay = np.add(inv[1, 1] * ys + inv[1, 2], inv[1, 0] * xs)
    fx, fy = np.floor(ax), np.floor(ay)
    ax -= fx  # …and their fractions, the weights
    ay -= fy
    # the source window the samples reach, padded with border to two pixels beyond the
    # image, and at each of its pixels the 2x2 neighbourhood: one gather per tap
    wx0, wx1 = min(max(int(fx.min()), -2), src_w), min(max(int(fx.max()) + 1, -1), src_w + 1)
    wy0, wy1 = min(max(int(fy.min()), -2), src_h), min(max(int(fy.max()) + 1, -1), src_h + 1)
    window = np.empty((wy1 - wy0 + 1, wx1 - wx0 + 1) + chans, image.dtype)
    window[...] = border
    cx0, cx1, cy0, cy1 = max(wx0, 0), min(wx1 + 1, src_w), max(wy0, 0), min(wy1 + 1, src_h)
    window[cy0 - wy0:cy1 - wy0, cx0 - wx0:cx1 - wx0] = image[cy0:cy1, cx0:cx1]
    quad = np.stack([window[:-1, :-1], window[:-1, 1:], window[1:, :-1], window[1:, 1:]])
    np.clip(fx, wx0, wx1 - 1, out=fx)  # far outside: both taps on the border
    np.clip(fy, wy0, wy1 - 1, out=fy)
    fy -= wy0
    fy *= quad.shape[2]
    fy += fx - wx0
    index = fy.astype(np.intp)
    flat = quad.reshape((4, -1) + chans)
    p00, p01, p10, p11 = (np.take(flat[k], index, axis=0) for k in range(4))
    if chans:
        ax, ay = ax[..., None], ay[..., None]
    top = np.subtract(p01, p00, dtype=np.float64)  # p00 + ax·(p01 − p00), in place
    top *= ax
    top += p00
    result = np.subtract(p11, p10, dtype=np.float64)
    result *= ax
    result += p10
    result -= top  # top + ay·(bottom − top)
    result *= ay
    result += top
    if out is None:
        return result
    out[y0:y1, x0:x1] = result
    return out


def warp_face(frame: np.ndarray, matrix: np.ndarray, colour_order: str,
              face_size: int = FACE_SIZE) -> np.ndarray:
    """The aligned 512 crop, bilinear, on the official grey border (in the frame's order)."""
    if colour_order not in ("rgb", "bgr"):
        raise ValueError("colour_order must be 'rgb' or 'bgr'")
    border = BORDER_BGR if colour_order == "bgr" else BORDER_BGR[::-1]
    crop = warp_bilinear(frame, matrix, (face_size, face_size), border)
    # a convex mix of uint8 values: rounding (half to even, as OpenCV) needs no clipping
    return np.rint(crop, out=crop).astype(frame.dtype)


def inverse_matrix(matrix: np.ndarray, upscale: float = 1.0) -> np.ndarray:
    """crop → output canvas: inverse × upscale, plus facexlib's 0.5·upscale shift above 1."""
    inverse = cv2.invertAffineTransform(matrix) * upscale
    if upscale > 1:
        inverse[:, 2] += 0.5 * upscale
    return inverse


def square_soft_mask(inverse: np.ndarray, height: int, width: int, upscale: float = 1.0,
                     face_size: int = FACE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """facexlib's mask without the parser: (eroded inverse mask, blurred soft mask), float32."""
    ones = np.ones((face_size, face_size), np.float32)
    inv_mask = warp_bilinear(ones, inverse, (width, height)).astype(np.float32)
    k = int(2 * upscale)
    eroded = cv2.erode(inv_mask, np.ones((k, k), np.uint8))
    edge = int(np.sqrt(eroded.sum())) // 20
    soft = cv2.erode(eroded, np.ones((2 * edge, 2 * edge), np.uint8))
    soft = cv2.GaussianBlur(soft, (2 * edge + 1, 2 * edge + 1), 0)
    return eroded, soft


def parse_soft_mask(parse_classes: np.ndarray, inverse: np.ndarray, height: int, width: int,
                    face_size: int = FACE_SIZE) -> np.ndarray:
    """The default mask: face-parser classes of the restored face → blurred, warped, 0..1."""
    # float64 as published: in float32 the blurs are twice as fast (19 -> 9 ms per face) but
    # the interior drifts just below 1.0 and the truncating blend then moves 5 % of the
    # pixels by one count (measured with tests/test_restore_paste.py): not the same result.
    mask = np.where(np.isin(parse_classes, NON_FACE_CLASSES), 0.0, 255.0)
    mask = cv2.GaussianBlur(mask, (101, 101), 11)
    mask = cv2.GaussianBlur(mask, (101, 101), 11)
    border = 10
    mask[:border, :] = mask[-border:, :] = 0
    mask[:, :border] = mask[:, -border:] = 0
    mask = mask / 255.0
    mask = cv2.resize(mask, (face_size, face_size))
    return cv2.warpAffine(mask, inverse, (width, height), flags=3)


def upscaled_background(frame: np.ndarray, upscale: float) -> np.ndarray:
    if upscale == 1:
        return frame
    height, width = frame.shape[:2]
    return cv2.resize(frame, (int(width * upscale), int(height * upscale)),
                      interpolation=cv2.INTER_LANCZOS4)


def paste_face(background: np.ndarray, restored_face: np.ndarray, inverse: np.ndarray,
               parse_classes: np.ndarray | None = None, upscale: float = 1.0) -> np.ndarray:
    """Composite the restored face into the (already upscaled) background; uint8 out.

    With ``parse_classes`` (the parser's argmax on the restored face) the official default
    mask is used; without, facexlib's square mask.
    """
    height, width = background.shape[:2]
    face = cv2.warpAffine(restored_face, inverse, (width, height))
    if parse_classes is not None:
        mask = parse_soft_mask(parse_classes, inverse, height, width, restored_face.shape[0])
    else:
        eroded, mask = square_soft_mask(inverse, height, width, upscale, restored_face.shape[0])
        face = eroded[..., None] * face
    # Outside the face's square the mask is exactly 0 and the blend gives the background
    # back unchanged: blend only inside it (a fraction of a large frame).
    y0, y1, x0, x1 = face_region(inverse, restored_face.shape[0], height, width)
    out = background.copy()
    m = mask[y0:y1, x0:x1, None]
    out[y0:y1, x0:x1] = (m * face[y0:y1, x0:x1] + (1 - m) * background[y0:y1, x0:x1]
                         ).astype(np.uint8)  # truncation, as the official code
    return out


def face_region(inverse: np.ndarray, face_size: int, height: int,
                width: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the frame rows and columns the face square lands on, plus a
    pixel for interpolation, clipped to the frame."""
    corners = np.array([[0, 0, 1], [face_size, 0, 1], [0, face_size, 1],
                        [face_size, face_size, 1]], np.float64) @ np.asarray(inverse).T
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 2
    return max(y0, 0), min(max(y1, 0), height), max(x0, 0), min(max(x1, 0), width)
