"""Fonts for the news graphics.

The DejaVu faces ship inside the package (``talkinghead.assets.fonts``) so that every
machine draws the same glyphs; if they are missing we still render, with Pillow's
built-in scalable font, rather than fail a whole video over typography.
"""

from __future__ import annotations

import functools
from importlib import resources
from io import BytesIO

from PIL import ImageFont

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

FONT_PACKAGE = "talkinghead.assets.fonts"
REGULAR_FILE = "DejaVuSans.ttf"
BOLD_FILE = "DejaVuSans-Bold.ttf"


@functools.lru_cache(maxsize=64)
def load_font(size: int, bold: bool = False) -> Font:
    """The packaged DejaVu face at `size` pixels, or Pillow's default font as a fallback."""
    data = _packaged_font_bytes(BOLD_FILE if bold else REGULAR_FILE)
    if data is None:
        return ImageFont.load_default(size=size)
    # truetype() keeps reading from the file object, so hand it one that lives with the font.
    return ImageFont.truetype(BytesIO(data), size=size)


@functools.lru_cache(maxsize=4)
def _packaged_font_bytes(name: str) -> bytes | None:
    try:
        return resources.files(FONT_PACKAGE).joinpath(name).read_bytes()
    except (ModuleNotFoundError, OSError):
        return None
