"""MuseTalk 1.5's jaw mask and blending: where the redrawn face replaces the frame.

The face parser (BiSeNet, ``networks/bisenet.py``) labels a square crop around the face at
512x512; mode ``jaw`` (v1.5's) keeps the skin spread downwards by a cone-shaped kernel and
pulled in at the cheeks, drops the nose, and adds mouth and lips. The mask is brought back to
the crop, cut to the face box, its upper half cleared, and blurred; the face, resized to the
box, is pasted into the crop, and the crop into the frame through that mask.

Upstream has two blending paths that differ only in the blur: ``get_image`` (offline
inference, kernel 0.05 of the crop width, the parser run for every frame) and
``get_image_blending`` (realtime, 0.1, the mask prepared once per avatar frame). Both masks
depend only on the video frame and the box, never on the generated face, so we make the mask
once per motion-clip frame either way and let ``blur`` choose the kernel: the default is the
offline path's 0.05 (what scripts/inference.py, and the published results, use); 0.1 gives
the realtime path's softer seam. The pixel operations are Pillow's and OpenCV's own, as
upstream's, so the frames equal its output exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image

PARSE_SIZE = 512
EXPAND = 1.5            # the crop box's side, as a multiple of the face box's larger side
UPPER_BOUNDARY = 0.5    # the mask is cleared above this fraction of the crop's height
BLUR_OFFLINE, BLUR_REALTIME = 0.05, 0.1
CHEEK_WIDTH = 90        # v1.5's FaceParsing(left_cheek_width=90, right_cheek_width=90)
SKIN, NOSE, MOUTH_AND_LIPS, NECK = 1, 10, (11, 12, 13), 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def jaw_kernel(cone: int = 21, tail: int = 12) -> np.ndarray:
    """The dilation kernel that spreads skin downwards: rows of a cone widening by 2 per row
    from the kernel's centre row, then ``tail`` rows as wide as its base."""
    size = cone + tail
    kernel = np.zeros((size, size), np.uint8)
    centre = size // 2
    for row in range(cone // 2, cone):
        half = row - cone // 2
        kernel[row, centre - half:centre + half + 1] = 1
    base = int(kernel[cone - 1].sum())
    for row in range(cone, size):
        kernel[row, max(0, centre - base // 2):min(size, centre + base // 2 + 1)] = 1
    return kernel


def cheek_kernel() -> np.ndarray:
    """The flat ellipse (35x3) that erodes the mask's sides."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (35, 3))


def cheek_band(left: int = CHEEK_WIDTH, right: int = CHEEK_WIDTH) -> np.ndarray:
    """255 outside the central band of the 512 parse: columns up to 256 - left and from
    256 + right (OpenCV filled rectangles, end points included)."""
    mask = np.zeros((PARSE_SIZE, PARSE_SIZE), np.uint8)
    centre = PARSE_SIZE // 2
    cv2.rectangle(mask, (0, 0), (centre - left, PARSE_SIZE), 255, -1)
    cv2.rectangle(mask, (centre + right, 0), (PARSE_SIZE, PARSE_SIZE), 255, -1)
    return mask


def labels_to_mask(labels: np.ndarray, mode: str = "jaw", band: np.ndarray | None = None) -> np.ndarray:
    """uint8 0/255 mask from a 512x512 label map. ``jaw``: skin dilated by the jaw kernel,
    eroded twice by the cheek kernel where ``band`` is set (kept dilated elsewhere), nose
    removed, mouth and lips added; ``raw``: skin, mouth, lips; ``neck``: those and neck."""
    if mode == "raw":
        return np.where(np.isin(labels, (SKIN, *MOUTH_AND_LIPS)), 255, 0).astype(np.uint8)
    if mode == "neck":
        return np.where(np.isin(labels, (SKIN, *MOUTH_AND_LIPS, NECK)), 255, 0).astype(np.uint8)
    if mode != "jaw":
        raise ValueError(f"unknown mask mode {mode!r} (jaw, raw, neck)")
    band = cheek_band() if band is None else band
    skin = np.where(labels == SKIN, 255, 0).astype(np.uint8)
    dilated = cv2.dilate(skin, jaw_kernel(), iterations=1)
    eroded = cv2.erode(dilated, cheek_kernel(), iterations=2)
    region = (eroded & band) | (dilated & ~band)
    keep = ((region == 255) & (labels != NOSE)) | np.isin(labels, MOUTH_AND_LIPS)
    return np.where(keep, 255, 0).astype(np.uint8)


def crop_box(box: tuple[int, int, int, int], expand: float = EXPAND) -> tuple[int, int, int, int]:
    """The square around the face box that the parser sees: centre (floored), half side
    int(max(w, h) // 2 · expand). It may leave the frame."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    s = int(max(x2 - x1, y2 - y1) // 2 * expand)
    return cx - s, cy - s, cx + s, cy + s


def crop_image(image_rgb: np.ndarray, box: tuple[int, int, int, int]) -> Image.Image:
    """The frame's crop at ``box`` (black where it leaves the frame), as Pillow cuts it."""
    return Image.fromarray(image_rgb).crop(box)


def parser_input(crops: list[Image.Image]) -> torch.Tensor:
    """[N, 3, 512, 512]: each crop resized (bilinear, Pillow) to 512, /255, ImageNet mean/std."""
    arrays = np.stack([np.asarray(c.resize((PARSE_SIZE, PARSE_SIZE), Image.BILINEAR)) for c in crops])
    x = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous().float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def blur_kernel(crop_width: int, blur: float) -> int:
    return int(blur * crop_width // 2 * 2) + 1


def prepare_mask(mask512: np.ndarray, box: tuple[int, int, int, int],
                 cbox: tuple[int, int, int, int], blur: float = BLUR_OFFLINE) -> np.ndarray:
    """The blend mask over the crop box (uint8, crop-sized): the 512 mask resized back
    (Pillow's default, bicubic), cut to the face box and pasted on black, its upper half
    cleared, blurred (OpenCV Gaussian, kernel from ``blur``·width, sigma from the kernel)."""
    x1, y1, x2, y2 = box
    xs, ys, xe, ye = cbox
    size = (xe - xs, ye - ys)
    full = Image.fromarray(mask512).resize(size)
    inner = (x1 - xs, y1 - ys, x2 - xs, y2 - ys)
    canvas = Image.new("L", size, 0)
    canvas.paste(full.crop(inner), inner)
    width, height = size
    top = int(height * UPPER_BOUNDARY)
    kept = Image.new("L", size, 0)
    kept.paste(canvas.crop((0, top, width, height)), (0, top))
    k = blur_kernel(width, blur)
    return cv2.GaussianBlur(np.asarray(kept), (k, k), 0)


@dataclass(frozen=True)
class BlendMaterial:
    """What blending needs from one motion frame: its box, crop box and blurred mask."""

    box: tuple[int, int, int, int]
    crop_box: tuple[int, int, int, int]
    mask: np.ndarray  # uint8, crop-box-sized


def blend(image_rgb: np.ndarray, face_rgb: np.ndarray, material: BlendMaterial) -> np.ndarray:
    """The frame with ``face_rgb`` (already box-sized) pasted into its crop and the crop
    pasted back through the mask (Pillow's paste: exact upstream arithmetic)."""
    x1, y1, x2, y2 = material.box
    xs, ys, _, _ = material.crop_box
    body = Image.fromarray(image_rgb)
    large = body.crop(material.crop_box)
    large.paste(Image.fromarray(face_rgb), (x1 - xs, y1 - ys, x2 - xs, y2 - ys))
    body.paste(large, (xs, ys), Image.fromarray(material.mask))
    return np.asarray(body)
