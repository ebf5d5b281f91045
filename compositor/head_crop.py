"""Choosing which part of the head video fills the head panel ("cover" fitting).

The head image is scaled so that it covers the whole panel and the excess is cropped.
Without a face box the crop is centred; with one, the face is centred horizontally and
placed in the upper-middle of the panel, as a camera operator would frame a presenter.
The crop is always kept inside the image, so the panel never shows an empty border.
"""

from __future__ import annotations

from dataclasses import dataclass

FACE_CENTRE_HEIGHT = 0.42
"""Where the face centre lands, as a fraction of the panel height from its top."""


@dataclass(frozen=True)
class CropWindow:
    """A crop of the head image, (x0, y0, x1, y1) in its pixels, for images of `source_hw`."""

    x0: int
    y0: int
    x1: int
    y1: int
    source_hw: tuple[int, int]

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def cover_crop(
    source_hw: tuple[int, int],
    target_wh: tuple[int, int],
    face_box: tuple[float, float, float, float] | None = None,
) -> CropWindow:
    """The crop of a `source_hw` image that, scaled to `target_wh`, exactly covers it."""
    src_h, src_w = int(source_hw[0]), int(source_hw[1])
    tgt_w, tgt_h = int(target_wh[0]), int(target_wh[1])
    if min(src_h, src_w, tgt_w, tgt_h) <= 0:
        raise ValueError(f"empty image or panel: source {src_w}x{src_h}, panel {tgt_w}x{tgt_h}")

    # The scale that makes the image cover the panel; the crop is the panel seen at that scale.
    scale = max(tgt_w / src_w, tgt_h / src_h)
    crop_w = min(src_w, max(1, round(tgt_w / scale)))
    crop_h = min(src_h, max(1, round(tgt_h / scale)))

    if face_box is None:
        centre_x, top_y = src_w / 2, (src_h - crop_h) / 2
    else:
        fx0, fy0, fx1, fy1 = (float(v) for v in face_box)
        if not (fx1 > fx0 and fy1 > fy0):
            raise ValueError(f"face_box must be (x0, y0, x1, y1) with x1 > x0, y1 > y0: {face_box}")
        centre_x = (fx0 + fx1) / 2
        top_y = (fy0 + fy1) / 2 - FACE_CENTRE_HEIGHT * crop_h

    x0 = _clamp(round(centre_x - crop_w / 2), 0, src_w - crop_w)
    y0 = _clamp(round(top_y), 0, src_h - crop_h)
    return CropWindow(x0, y0, x0 + crop_w, y0 + crop_h, (src_h, src_w))


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))
