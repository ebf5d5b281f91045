"""The frame's bottom layer: background gradient, accent bar, head panel frame, ticker band.

Everything here is content-free geometry from NewsLayout; the text-bearing layers (card,
logo, ticker label) are drawn on top by their own modules.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .scene import NewsLayout
from .shapes import inclusive

# A fixed seed keeps the dither identical between runs, so renders are reproducible.
_DITHER_SEED = 1080


def draw_backdrop(layout: NewsLayout) -> Image.Image:
    """A new RGB image holding the background and the empty frames the other layers fill."""
    image = Image.fromarray(_vertical_gradient(layout), "RGB")
    draw = ImageDraw.Draw(image)

    draw.rectangle(inclusive(layout.accent_bar), fill=layout.accent)

    # Head panel: a thin border around a black well; the video covers the well every frame.
    draw.rectangle(inclusive(layout.head_panel), fill=layout.head_border)
    draw.rectangle(inclusive(layout.head_inner), fill=(0, 0, 0))

    # Ticker band: near-black, with a red rule on top tying it to the label box.
    x0, y0, x1, y1 = layout.ticker_band
    draw.rectangle(inclusive(layout.ticker_band), fill=layout.ticker_fill)
    draw.rectangle((x0, y0, x1 - 1, y0 + 2), fill=layout.accent)
    return image


def _vertical_gradient(layout: NewsLayout) -> np.ndarray:
    """Top-to-bottom blend of the two background colours, dithered so it does not band."""
    t = np.linspace(0.0, 1.0, layout.height, dtype=np.float32)[:, None, None]
    top = np.asarray(layout.background_top, dtype=np.float32)
    bottom = np.asarray(layout.background_bottom, dtype=np.float32)
    column = top * (1.0 - t) + bottom * t
    rng = np.random.default_rng(_DITHER_SEED)
    noise = rng.uniform(-0.5, 0.5, size=(layout.height, layout.width, 1)).astype(np.float32)
    return np.clip(np.rint(column + noise), 0, 255).astype(np.uint8)
