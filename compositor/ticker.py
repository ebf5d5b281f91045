"""The crawling ticker: a label box on the left and text scrolling right to left.

The text is rendered once into one "tile" whose width is the loop period. The tile is
repeated into a strip one window longer than the period, so that any scroll offset,
taken modulo the period, is a plain slice of the strip: the crawl loops without a seam
and costs one array copy per frame.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .scene import TICKER_SEPARATOR, Color, NewsLayout, NewsScene
from .shapes import paste_polygon
from .text_fit import fit_line
from .text_runs import TextFont, draw_text, text_font

LABEL_SIZES = (34, 16)
LABEL_PAD_X = 18
ACCENT_RULE_PX = 3  # the red rule along the top of the band; the text centres below it


def draw_ticker_label(image: Image.Image, scene: NewsScene, layout: NewsLayout) -> None:
    """The red label box ("JOBS") at the left end of the ticker band, with a slanted edge."""
    x0, y0, x1, y1 = layout.ticker_label
    slant = layout.ticker_label_slant_px
    paste_polygon(image, [(x0, y0), (x1 + slant, y0), (x1, y1), (x0, y1)], layout.accent)
    label = fit_line(
        scene.ticker_label.upper(),
        x1 - x0 - 2 * LABEL_PAD_X,
        LABEL_SIZES[0],
        LABEL_SIZES[1],
        bold=True,
    )
    draw_text(ImageDraw.Draw(image), ((x0 + x1) / 2, (y0 + y1) / 2), label.lines[0], label.font,
              (255, 255, 255), anchor="mm")


class TickerStrip:
    """The ticker text pre-rendered as a seamlessly repeating strip of pixels."""

    def __init__(
        self,
        text: str,
        font: TextFont,
        background_column: np.ndarray,
        window_width: int,
        text_color: Color,
        separator_color: Color,
        text_top: int = 0,
    ) -> None:
        """`background_column` is the band's (height, 3) colour profile behind the text."""
        height = background_column.shape[0]
        self.window_width = int(window_width)
        pieces = _ticker_pieces(text, font)
        self.period_px = max(1, math.ceil(sum(width for _, width in pieces)))
        tile = Image.fromarray(
            np.ascontiguousarray(np.broadcast_to(background_column[:, None, :], (height, self.period_px, 3))),
            "RGB",
        )
        _draw_ticker_text(tile, pieces, font, text_top, text_color, separator_color)
        repeats = math.ceil((self.period_px + self.window_width) / self.period_px)
        strip = np.tile(np.asarray(tile), (1, repeats, 1))
        self.strip = np.ascontiguousarray(strip[:, : self.period_px + self.window_width])
        self.strip.flags.writeable = False

    @classmethod
    def for_scene(cls, scene: NewsScene, layout: NewsLayout, backdrop: np.ndarray) -> TickerStrip:
        """The strip for `scene`, on the band colours found in the drawn `backdrop`."""
        x0, y0, x1, y1 = layout.ticker_crawl
        font = text_font(layout.ticker_font_px)
        ascent, descent = font.getmetrics()
        band_centre = (y1 - y0 + ACCENT_RULE_PX) / 2
        return cls(
            text=scene.resolved_ticker_text(),
            font=font,
            background_column=backdrop[y0:y1, x0].copy(),
            window_width=x1 - x0,
            text_color=layout.ticker_text_color,
            separator_color=layout.accent,
            text_top=round(band_centre - (ascent + descent) / 2),
        )

    def window(self, offset_px: int) -> np.ndarray:
        """The visible part of the crawl after it has moved `offset_px` pixels to the left."""
        start = offset_px % self.period_px
        return self.strip[:, start : start + self.window_width]


def _ticker_pieces(text: str, font: TextFont) -> list[tuple[str, float]]:
    """The text cut at its separator dots (each dot a piece of its own), with widths."""
    dot = TICKER_SEPARATOR.strip()
    pieces = []
    start = 0
    while start < len(text):
        end = text.find(dot, start)
        run_end = len(text) if end < 0 else (end if end > start else end + len(dot))
        pieces.append(text[start:run_end])
        start = run_end
    return [(piece, font.getlength(piece)) for piece in pieces]


def _draw_ticker_text(
    tile: Image.Image,
    pieces: list[tuple[str, float]],
    font: TextFont,
    top: int,
    color: Color,
    separator_color: Color,
) -> None:
    """The pieces side by side in `color`, the separator dots in `separator_color`.

    Each piece is placed at the sum of the widths before it, so the strip's period is the
    sum of all widths. A piece is laid out on its own (right-to-left text inside it reads
    right to left; the items follow each other in the crawl's direction).
    """
    draw = ImageDraw.Draw(tile)
    dot = TICKER_SEPARATOR.strip()
    x = 0.0
    for piece, width in pieces:
        fill = separator_color if piece == dot else color
        draw_text(draw, (x, top), piece, font, fill, anchor="la")
        x += width
