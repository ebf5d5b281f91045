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

import cv2
import numpy as np

from talkinghead.services.restore.lmeds_similarity import estimate_similarity

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


# ---- alignment ------------------------------------------------------------------------


def alignment_matrix(landmarks_5: np.ndarray, face_size: int = FACE_SIZE) -> np.ndarray:
    """(2, 3) frame → crop similarity, as the official helper estimates it: OpenCV 5's
    estimateAffinePartial2D(..., method=LMEDS) (services/restore/lmeds_similarity.py says
    why it is written out rather than called)."""
    matrix = estimate_similarity(landmarks_5, FFHQ_TEMPLATE_512 * (face_size / 512.0))
    if matrix is None:
        raise ValueError("cannot align: degenerate landmarks")
    return matrix


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
    mask = parse_face_mask(parse_classes, face_size)
    return cv2.warpAffine(mask, inverse, (width, height), flags=3)


def parse_face_mask(parse_classes: np.ndarray, face_size: int = FACE_SIZE) -> np.ndarray:
    """parse_soft_mask before its warp: the blurred 0..1 mask in face coordinates, float64."""
    mask = np.where(np.isin(parse_classes, NON_FACE_CLASSES), 0.0, 255.0)
    mask = cv2.GaussianBlur(mask, (101, 101), 11)
    mask = cv2.GaussianBlur(mask, (101, 101), 11)
    border = 10
    mask[:border, :] = mask[-border:, :] = 0
    mask[:, :border] = mask[:, -border:] = 0
    mask = mask / 255.0
    return cv2.resize(mask, (face_size, face_size))


def upscaled_background(frame: np.ndarray, upscale: float) -> np.ndarray:
    if upscale == 1:
        return frame
    height, width = frame.shape[:2]
    return cv2.resize(frame, (int(width * upscale), int(height * upscale)),
                      interpolation=cv2.INTER_LANCZOS4)


def parse_mask_region(parse_classes: np.ndarray, inverse: np.ndarray, height: int,
                      width: int, face_size: int = FACE_SIZE
                      ) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """``parse_soft_mask`` kept where it can be non-zero: ((y0, y1, x0, x1), float64 mask of
    that region), what ``paste_face(mask_region=...)`` takes (and the presenter cache keeps)."""
    mask = parse_soft_mask(parse_classes, inverse, height, width, face_size)
    y0, y1, x0, x1 = region = face_region(inverse, face_size, height, width)
    return region, np.ascontiguousarray(mask[y0:y1, x0:x1])


def paste_face(background: np.ndarray, restored_face: np.ndarray, inverse: np.ndarray,
               parse_classes: np.ndarray | None = None, upscale: float = 1.0,
               mask_region: tuple[tuple[int, int, int, int], np.ndarray] | None = None
               ) -> np.ndarray:
    """Composite the restored face into the (already upscaled) background; uint8 out.

    With ``parse_classes`` (the parser's argmax on the restored face) the official default
    mask is used; with ``mask_region`` (``parse_mask_region``'s, made earlier) that mask;
    with neither, facexlib's square mask.
    """
    height, width = background.shape[:2]
    face = cv2.warpAffine(restored_face, inverse, (width, height))
    if mask_region is None and parse_classes is not None:
        mask_region = parse_mask_region(parse_classes, inverse, height, width,
                                        restored_face.shape[0])
    if mask_region is not None:
        (y0, y1, x0, x1), m = mask_region
        m = m[..., None]
    else:
        eroded, mask = square_soft_mask(inverse, height, width, upscale, restored_face.shape[0])
        face = eroded[..., None] * face
        # Outside the face's square the mask is exactly 0 and the blend gives the background
        # back unchanged: blend only inside it (a fraction of a large frame).
        y0, y1, x0, x1 = face_region(inverse, restored_face.shape[0], height, width)
        m = mask[y0:y1, x0:x1, None]
    out = background.copy()
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
