"""The channel mark: a red trapezoid hanging from the accent bar in the top-right corner.

It carries either the channel's logo image, scaled to fit inside, or the channel name
set in bold capitals when no logo is given.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, UnidentifiedImageError

from .scene import NewsLayout, NewsScene, Rect
from .shapes import paste_polygon
from .text_fit import fit_line
from .text_runs import draw_text

NAME_SIZES = (34, 14)
PAD_X = 22
PAD_Y = 12


def draw_logo(image: Image.Image, scene: NewsScene, layout: NewsLayout) -> None:
    """Draw the trapezoid and its content onto `image`."""
    x0, y0, x1, y1 = layout.logo
    slant = layout.logo_slant_px
    # The left edge slants inward toward the bottom, like a tab hanging from the bar.
    paste_polygon(image, [(x0, y0), (x1, y0), (x1, y1), (x0 + slant, y1)], layout.accent)
    # Content stays inside the rectangle that the slanted edge never cuts.
    inner: Rect = (x0 + slant + PAD_X, y0 + PAD_Y, x1 - PAD_X, y1 - PAD_Y)
    if scene.logo_path is not None:
        _paste_logo_image(image, Path(scene.logo_path), inner)
    else:
        _draw_channel_name(image, scene.channel_name, inner)


def _draw_channel_name(image: Image.Image, name: str, box: Rect) -> None:
    x0, y0, x1, y1 = box
    text = fit_line(name.upper(), x1 - x0, NAME_SIZES[0], NAME_SIZES[1], bold=True)
    draw_text(ImageDraw.Draw(image), ((x0 + x1) / 2, (y0 + y1) / 2), text.lines[0], text.font,
              (255, 255, 255), anchor="mm")


def _paste_logo_image(image: Image.Image, path: Path, box: Rect) -> None:
    """Scale the logo to fit `box` (keeping its aspect ratio) and composite it, centred."""
    try:
        with Image.open(path) as source:
            logo = source.convert("RGBA")
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"cannot read the logo image {path}: {error}") from error
    x0, y0, x1, y1 = box
    scale = min((x1 - x0) / logo.width, (y1 - y0) / logo.height)
    fitted = (
        max(1, min(x1 - x0, round(logo.width * scale))),
        max(1, min(y1 - y0, round(logo.height * scale))),
    )
    logo = logo.resize(fitted, Image.Resampling.LANCZOS)
    left = x0 + (x1 - x0 - logo.width) // 2
    top = y0 + (y1 - y0 - logo.height) // 2
    image.paste(logo, (left, top), logo)
