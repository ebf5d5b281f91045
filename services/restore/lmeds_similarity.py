"""OpenCV 5's estimateAffinePartial2D(..., method=LMEDS), written out in our own code.

The published helper calls cv2.estimateAffinePartial2D(landmarks, template, method=LMEDS)
with its defaults (confidence 0.99, 10 refinement iterations). OpenCV 4's refinement
converges to the least-squares similarity; OpenCV 5's does not. Its Levenberg-Marquardt
solver (modules/3d/src/levmarq.cpp) adds geodesic acceleration: a second-order correction
from finite differences with a step of 1e-4. The model is linear, so that correction is
rounding noise divided by 1e-8, and it leaves the result up to ~2e-5 crop pixels from the
least-squares fit (8e-6 on the pack's face). The published matrix thus depends on each
rounding in the solver, and we follow OpenCV 5's arithmetic step by step: float32 points,
its random 2-point subsets, its float32 LMedS scores, its Jacobi-SVD solve, its orders of
summation, and the fused multiply-adds of its AVX2 build (the pack's machine; OpenCV 5
without AVX2 lands 6e-6 from the published matrix). Checked against OpenCV 5.0 on the
pack's landmarks and on 600 other sets (noisy, rotated, scaled, moved, a third of them
with a gross outlier): equal to the bit.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

_LMEDS_CONFIDENCE = 0.99
_LMEDS_MAX_ITERS = 2000
_LMEDS_OUTLIER_RATIO = 0.45  # the share of outliers LMedS sizes its search for
_REFINE_ITERATIONS = 10
_GEODESIC_STEP = 1e-4
_DBL_EPSILON = float(np.finfo(np.float64).eps)
_DBL_MIN = float(np.finfo(np.float64).tiny)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """(2, 3) similarity mapping ``src`` points onto ``dst`` (both (n, 2)): LMedS over
    2-point models, then Levenberg-Marquardt on the inliers, as OpenCV 5 computes it.
    None for degenerate points."""
    src = np.asarray(src, np.float64).reshape(-1, 2).astype(np.float32)
    dst = np.asarray(dst, np.float64).reshape(-1, 2).astype(np.float32)
    found = lmeds_similarity(src, dst)
    if found is None:
        return None
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
