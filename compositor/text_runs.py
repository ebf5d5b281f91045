"""Setting a line of text in several fonts: split into runs of one face, measure, draw.

Every text on the frame goes through ``draw_text`` and is measured with ``TextFont``, so
fitting, wrapping, ellipsis, chips and the ticker all see the width that is really drawn.

A line is cut into clusters (a character with its combining marks, joiners, variation
selectors and emoji modifiers: what must stay in one face to be shaped), each cluster gets
the first face of the chain (fonts.font_chain) that has all of it, and neighbouring
clusters of one face and one bidi level become one run. A line that is one run is handed
to Pillow's raqm layout whole (shaping and the full bidi algorithm, as before fallback
fonts existed); otherwise the runs are placed in visual order by their levels (bidi.py)
and each is shaped by raqm in its own direction, all on the primary face's baseline.

A cluster that no face has is drawn as U+FFFD (the replacement character) and its code
points are reported: kept in the layout's ``missing`` and collected by
``collect_missing`` around drawing, so the renderer can put them in the job result.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import ImageDraw, ImageFont, features

from . import fonts
from .bidi import embedding_levels, paragraph_level, visual_order
from .fonts import Face

REPLACEMENT = "\ufffd"
RAQM = features.check_feature("raqm")

_missing: contextvars.ContextVar[set[int] | None] = contextvars.ContextVar("missing_glyphs", default=None)
_cjk_hint: contextvars.ContextVar[str | None] = contextvars.ContextVar("cjk_variant", default=None)


@dataclass(frozen=True)
class Run:
    """Part of a line set in one face at one bidi level."""

    text: str
    """In logical order, as handed to the shaper."""
    face: Face
    font: ImageFont.FreeTypeFont
    rtl: bool
    x: float
    """Left edge of the run's advance, from the line's left edge."""
    width: float
    stroke: int = 0
    """Synthetic bold: the outline is stroked this many pixels wide."""


@dataclass(frozen=True)
class LineLayout:
    text: str
    runs: tuple[Run, ...]
    """Left to right as drawn."""
    width: float
    missing: tuple[int, ...]
    """Code points no face has, drawn as U+FFFD; sorted."""
    whole: bool
    """One run shaped whole by raqm (bidi included)."""


class TextFont:
    """Text of one size and weight: the primary face with per-character fallback.

    Stands in for a Pillow font where the layout code measures: ``getlength`` is the width
    of the runs really drawn, ``getmetrics`` the primary face's (lines keep one height
    whatever fonts they need).
    """

    def __init__(self, size: int, bold: bool = False) -> None:
        self.size = size
        self.bold = bold
        self.primary = fonts.load_font(size, bold)

    def getmetrics(self) -> tuple[int, int]:
        return self.primary.getmetrics()

    def getlength(self, text: str) -> float:
        return self.layout(text).width

    def layout(self, text: str) -> LineLayout:
        variant = _cjk_hint.get() or cjk_variant(text)
        return _layout(self.size, self.bold, text, variant, fonts.SYSTEM_FONTS)

    def __repr__(self) -> str:
        return f"TextFont({self.size}, bold={self.bold})"


@functools.lru_cache(maxsize=64)
def text_font(size: int, bold: bool = False) -> TextFont:
    return TextFont(size, bold)


def draw_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    font: TextFont,
    fill,
    anchor: str = "la",
) -> LineLayout:
    """Draw one line at `xy`, aligned like Pillow's `anchor` (horizontal l/m/r, vertical
    a/m/s/d, taken from the primary face); returns its layout. Code points no face has are
    added to the collection that `collect_missing` opened, if any."""
    layout = font.layout(text)
    collected = _missing.get()
    if collected is not None:
        collected.update(layout.missing)
    if not layout.runs:
        return layout
    first = layout.runs[0]
    if layout.whole and first.font is font.primary and not first.stroke:
        draw.text(xy, first.text, font=first.font, fill=fill, anchor=anchor)
        return layout
    x, y = xy
    ascent, descent = font.getmetrics()
    baseline = {"a": y + ascent, "m": y + math.floor((ascent - descent) / 2 + 0.5), "s": y,
                "d": y - descent}[anchor[1]]
    # Whole pixels, as Pillow's own anchors are.
    left = {"l": x, "m": x - math.floor(layout.width / 2 + 0.5), "r": x - math.floor(layout.width + 0.5)}[
        anchor[0]]
    for run in layout.runs:
        options = {}
        if run.stroke:
            options = {"stroke_width": run.stroke, "stroke_fill": fill}
        if RAQM and not layout.whole:
            options["direction"] = "rtl" if run.rtl else "ltr"
        text = run.text if RAQM or not run.rtl else run.text[::-1]
        draw.text((left + run.x + run.stroke, baseline), text, font=run.font, fill=fill, anchor="ls",
                  **options)
    return layout


@contextlib.contextmanager
def collect_missing() -> Iterator[set[int]]:
    """Collect the code points that ``draw_text`` could not draw while the block runs."""
    found: set[int] = set()
    token = _missing.set(found)
    try:
        yield found
    finally:
        _missing.reset(token)


@contextlib.contextmanager
def cjk_variant_for(text: str) -> Iterator[str]:
    """Set ideographs in the Japanese, Korean or Chinese forms that `text` (say, a whole
    card) calls for while the block runs, rather than judging line by line."""
    token = _cjk_hint.set(cjk_variant(text))
    try:
        yield _cjk_hint.get() or "sc"
    finally:
        _cjk_hint.reset(token)


def cjk_variant(text: str) -> str:
    """'jp' for text with kana, 'kr' for text with hangul, else 'sc' (simplified Chinese)."""
    for char in text:
        cp = ord(char)
        if 0x3040 <= cp <= 0x30FF or 0x31F0 <= cp <= 0x31FF or 0xFF66 <= cp <= 0xFF9F:
            return "jp"
    for char in text:
        cp = ord(char)
        if 0xAC00 <= cp <= 0xD7AF or 0x1100 <= cp <= 0x11FF or 0x3130 <= cp <= 0x318F:
            return "kr"
    return "sc"


def code_point_names(code_points) -> tuple[str, ...]:
    """('U+E000', ...) in code point order."""
    return tuple(f"U+{cp:04X}" for cp in sorted(code_points))


# -- layout ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def _layout(size: int, bold: bool, text: str, variant: str, system_fonts: bool) -> LineLayout:
    """(`system_fonts` only keys the cache: fonts.system_face_for reads the setting.)"""
    text = _clean(text)
    chain = _chain(bold, variant)
    if not chain:  # no font files at all: Pillow's default font, whatever it can draw
        font = fonts.load_font(size, bold)
        face = Face("Pillow default", "pillow", frozenset(), lambda s: font)
        run = Run(text, face, font, paragraph_level(text) == 1, 0.0, float(font.getlength(text)))
        return LineLayout(text, (run,) if text else (), run.width, (), True)
    pieces: list[tuple[Face, str]] = []
    missing: set[int] = set()
    previous: Face | None = None
    for cluster in clusters(text):
        face, drawn, lost = _face_for(cluster, chain, previous)
        missing.update(lost)
        pieces.append((face, drawn))
        previous = face
    if not pieces:
        return LineLayout("", (), 0.0, (), True)
    drawn_text = "".join(drawn for _, drawn in pieces)
    stroke = _stroke(size) if bold else 0
    if len({id(face) for face, _ in pieces}) == 1:
        face = pieces[0][0]
        font = face.font(size)
        run_stroke = stroke if face.synthetic_bold else 0
        width = float(font.getlength(drawn_text)) + 2 * run_stroke
        run = Run(drawn_text, face, font, paragraph_level(drawn_text) == 1, 0.0, width, run_stroke)
        return LineLayout(drawn_text, (run,), width, tuple(sorted(missing)), True)

    levels = embedding_levels(drawn_text)
    logical: list[tuple[Face, int, str]] = []
    position = 0
    for face, drawn in pieces:
        level = levels[position]
        position += len(drawn)
        if logical and logical[-1][0] is face and logical[-1][1] == level:
            logical[-1] = (face, level, logical[-1][2] + drawn)
        else:
            logical.append((face, level, drawn))
    runs: list[Run] = []
    x = 0.0
    for index in visual_order([level for _, level, _ in logical]):
        face, level, run_text = logical[index]
        font = face.font(size)
        rtl = level % 2 == 1
        run_stroke = stroke if face.synthetic_bold else 0
        width = _advance(font, run_text, rtl) + 2 * run_stroke
        runs.append(Run(run_text, face, font, rtl, x, width, run_stroke))
        x += width
    return LineLayout(drawn_text, tuple(runs), x, tuple(sorted(missing)), False)


def _advance(font: ImageFont.FreeTypeFont, text: str, rtl: bool) -> float:
    if RAQM:
        return float(font.getlength(text, direction="rtl" if rtl else "ltr"))
    return float(font.getlength(text[::-1] if rtl else text))


def _stroke(size: int) -> int:
    """Synthetic bold: a stroke of about a sixtieth of the size, at least one pixel."""
    return max(1, round(size / 60))


@functools.lru_cache(maxsize=16)
def _chain(bold: bool, variant: str) -> tuple[Face, ...]:
    """The chain with the Noto Sans CJK face for `variant` in place of the Chinese one."""
    chain = fonts.font_chain(bold)
    if variant == "sc":
        return chain
    cjk = fonts.cjk_face(variant, bold)
    return tuple(cjk if face.cjk and cjk is not None else face for face in chain)


def _clean(text: str) -> str:
    """Control characters become spaces; invisible format characters (bidi controls,
    zero-width space, soft hyphen) are dropped: they have no glyph to draw or report."""
    out = []
    for char in text:
        category = unicodedata.category(char)
        if category == "Cc":
            out.append(" ")
        elif not fonts.is_format_character(char):
            out.append(char)
    return "".join(out)


def _is_regional_indicator(cp: int) -> bool:
    return 0x1F1E6 <= cp <= 0x1F1FF


def _extends_cluster(cp: int) -> bool:
    return (
        unicodedata.category(chr(cp)) in ("Mn", "Mc", "Me")
        or fonts.is_ignorable(cp)
        or 0x1F3FB <= cp <= 0x1F3FF  # emoji skin tone modifiers
    )


def clusters(text: str) -> list[str]:
    """`text` cut where a face may change and a line may be cut: a character with its
    combining marks, joiners, selectors and emoji modifiers; a pair of flag letters."""
    clusters: list[str] = []
    for char in text:
        cp = ord(char)
        if clusters and (
            _extends_cluster(cp)
            or clusters[-1][-1] == "\u200d"
            or (
                _is_regional_indicator(cp)
                and len(clusters[-1]) == 1
                and _is_regional_indicator(ord(clusters[-1]))
            )
        ):
            clusters[-1] += char
        else:
            clusters.append(char)
    return clusters


_STICKY = {"Zs", "Po", "Ps", "Pe", "Pd", "Pi", "Pf", "Pc", "Nd", "Sm", "Sc"}
"""Spaces, punctuation, digits, maths and currency: drawn in the face of the text before
them when it has them (so a Chinese line keeps its own commas and digits)."""


def _face_for(cluster: str, chain: tuple[Face, ...], previous: Face | None) -> tuple[Face, str, set[int]]:
    """The face for `cluster`, the text to draw with it and the code points left out."""
    needed = [ord(c) for c in cluster if not fonts.is_ignorable(ord(c))]
    if not needed:  # a stray joiner or selector: shaped away with its neighbours
        return previous or chain[0], cluster, set()
    base = needed[0]
    if (
        previous is not None
        and not previous.emoji
        and unicodedata.category(chr(base)) in _STICKY
        and all(previous.has(cp) for cp in needed)
    ):
        return previous, cluster, set()
    faces = chain
    wants_emoji = (fonts.is_emoji_presentation(base) or "\ufe0f" in cluster) and "\ufe0e" not in cluster
    if wants_emoji:
        faces = tuple(f for f in chain if f.emoji) + tuple(f for f in chain if not f.emoji)
    for face in faces:
        if all(face.has(cp) for cp in needed):
            return face, cluster, set()
    system = fonts.system_face_for(base)
    if system is not None and all(system.has(cp) for cp in needed):
        return system, cluster, set()
    for face in (*faces, *((system,) if system is not None else ())):
        if face.has(base):  # the character without the marks no face has with it
            lost = {cp for cp in needed if not face.has(cp)}
            kept = "".join(c for c in cluster if ord(c) not in lost)
            return face, kept, lost
    return chain[0], REPLACEMENT, set(needed)
