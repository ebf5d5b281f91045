"""Anti-aliased shapes for the static graphics.

Pillow draws polygons and rounded rectangles with hard, stair-stepped edges. We draw each
shape's coverage mask at several times the resolution and box-filter it down, which gives
clean edges; it costs a few milliseconds, once per video, because static layers are drawn once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw

from .scene import Color, Rect

SUPERSAMPLE = 4


def inclusive(rect: Rect) -> Rect:
    """PIL's rectangle() includes its last row and column; our rects exclude them."""
    x0, y0, x1, y1 = rect
    return x0, y0, x1 - 1, y1 - 1


def paste_polygon(image: Image.Image, points: Sequence[tuple[float, float]], color: Color) -> None:
    """Fill a polygon on `image` with smooth edges."""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, y0 = math.floor(min(xs)), math.floor(min(ys))
    x1, y1 = math.ceil(max(xs)), math.ceil(max(ys))
    s = SUPERSAMPLE
    mask = Image.new("L", ((x1 - x0) * s, (y1 - y0) * s), 0)
    ImageDraw.Draw(mask).polygon([((x - x0) * s, (y - y0) * s) for x, y in points], fill=255)
    image.paste(color, (x0, y0, x1, y1), mask.reduce(s))


def paste_rounded_rect(
    image: Image.Image,
    rect: Rect,
    radius: float,
    fill: Color,
    outline: Color | None = None,
    outline_px: int = 0,
) -> None:
    """A rounded rectangle with smooth corners and an optional outline of `outline_px`."""
    if outline is not None and outline_px > 0:
        _paste_rounded(image, rect, radius, outline)
        x0, y0, x1, y1 = rect
        inner = (x0 + outline_px, y0 + outline_px, x1 - outline_px, y1 - outline_px)
        _paste_rounded(image, inner, max(radius - outline_px, 0), fill)
    else:
        _paste_rounded(image, rect, radius, fill)


def _paste_rounded(image: Image.Image, rect: Rect, radius: float, color: Color) -> None:
    x0, y0, x1, y1 = rect
    if x1 <= x0 or y1 <= y0:
        return
    s = SUPERSAMPLE
    mask = Image.new("L", ((x1 - x0) * s, (y1 - y0) * s), 0)
    ImageDraw.Draw(mask).rounded_rectangle(
        (0, 0, (x1 - x0) * s - 1, (y1 - y0) * s - 1), radius=radius * s, fill=255
    )
    image.paste(color, (x0, y0, x1, y1), mask.reduce(s))
