"""GFPGAN's face path around the network: align to FFHQ, and paste the result back.

Follows the official ``GFPGANer.enhance`` (Wang et al., 2021) through facexlib's
FaceRestoreHelper, step for step, so that real checkpoints give the official pictures:

1. a 4-DOF similarity from the five landmarks to the FFHQ 512 template (LMedS), and a
   bilinear warp of the frame to a 512x512 crop on a grey border;
2. after restoration, the inverse transform (scaled for an upscaled canvas, with facexlib's
   half-pixel shift), and a soft mask: the face parser's skin/feature classes blurred twice
   (default), or facexlib's eroded-and-blurred square;
3. the composite mask·face + (1 − mask)·background, truncated to uint8.

Colour order matters only for the warp's border fill and is explicit. OpenCV does the warps:
it quantises sampling positions the same way the official code does.
"""

from __future__ import annotations

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


def alignment_matrix(landmarks_5: np.ndarray, face_size: int = FACE_SIZE) -> np.ndarray:
    """(2, 3) frame → crop similarity, estimated robustly (LMedS) as the official helper."""
    template = FFHQ_TEMPLATE_512 * (face_size / 512.0)
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks_5, np.float64).reshape(5, 2),
                                            template, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("cannot align: degenerate landmarks")
    return matrix


def warp_face(frame: np.ndarray, matrix: np.ndarray, colour_order: str,
              face_size: int = FACE_SIZE) -> np.ndarray:
    """The aligned 512 crop, bilinear, on the official grey border (in the frame's order)."""
    if colour_order not in ("rgb", "bgr"):
        raise ValueError("colour_order must be 'rgb' or 'bgr'")
    border = BORDER_BGR if colour_order == "bgr" else BORDER_BGR[::-1]
    return cv2.warpAffine(frame, matrix, (face_size, face_size),
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border)


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
    inv_mask = cv2.warpAffine(ones, inverse, (width, height))
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
