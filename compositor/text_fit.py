"""Making text fit a box: shrink first, then wrap, then cut with an ellipsis.

Job cards come from users, so a title can be three words or thirty. Every text element
on the frame is laid out through these helpers, which guarantee the result is never
wider than its box and never has more lines than allowed. Widths are those of the text
as drawn, with fallback fonts for the characters the primary face lacks (text_runs).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from .fonts import is_emoji_presentation
from .text_runs import TextFont, clusters, text_font

ELLIPSIS = "…"


@dataclass(frozen=True)
class FittedText:
    """Lines of text set at one size, each known to fit the width they were fitted to."""

    lines: list[str]
    font: TextFont
    size: int

    @property
    def line_height(self) -> int:
        ascent, descent = self.font.getmetrics()
        return int(round((ascent + descent) * 1.08))

    @property
    def height(self) -> int:
        return self.line_height * len(self.lines)


def text_width(text: str, font: TextFont) -> float:
    return float(font.getlength(text))


def ellipsize(text: str, font: TextFont, max_width: float) -> str:
    """`text` itself if it fits, else its longest prefix that fits with an ellipsis added.

    The cut falls between clusters (text_runs.clusters): never between a letter and its
    marks, inside an emoji sequence or a flag.
    """
    if text_width(text, font) <= max_width:
        return text
    ends = [0]
    for cluster in clusters(text):
        ends.append(ends[-1] + len(cluster))
    lo, hi = 0, len(ends) - 1  # binary search on how many clusters to keep
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if text_width(text[: ends[mid]].rstrip() + ELLIPSIS, font) <= max_width:
            lo = mid
        else:
            hi = mid - 1
    kept = text[: ends[lo]].rstrip()
    return kept + ELLIPSIS if text_width(kept + ELLIPSIS, font) <= max_width else ""


def wrap_words(text: str, font: TextFont, max_width: float) -> list[str]:
    """Greedy word wrap; a single word wider than the box is ellipsized on its own line.

    Chinese and Japanese have no spaces between words: a line may break between any two
    ideographs, kana or emoji (not before closing punctuation or small kana, not after
    opening punctuation), as UAX #14 allows.
    """
    lines: list[str] = []
    current = ""
    for word, spaced in _tokens(text):
        candidate = (f"{current} {word}" if spaced else current + word) if current else word
        if text_width(candidate, font) <= max_width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = word if text_width(word, font) <= max_width else ellipsize(word, font, max_width)
    if current:
        lines.append(current)
    return lines


def _tokens(text: str) -> list[tuple[str, bool]]:
    """The pieces a line may break between, each with whether a space comes before it."""
    tokens: list[tuple[str, bool]] = []
    for word in text.split():
        pieces = [""]
        previous = ""
        for cluster in clusters(word):
            if previous and _may_break_between(previous, cluster):
                pieces.append("")
            pieces[-1] += cluster
            previous = cluster
        tokens.extend((piece, index == 0) for index, piece in enumerate(pieces))
    return tokens


def _breaks_anywhere(cluster: str) -> bool:
    cp = ord(cluster[0])
    return (
        0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF
        or 0x20000 <= cp <= 0x3FFFF or 0x3040 <= cp <= 0x30FF or 0x31F0 <= cp <= 0x31FF
        or 0xFF66 <= cp <= 0xFF9F or is_emoji_presentation(cp)
    )


_NO_BREAK_BEFORE = set("ーぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ々〻")


def _may_break_between(before: str, after: str) -> bool:
    if not (_breaks_anywhere(before) or _breaks_anywhere(after)):
        return False
    if after[0] in _NO_BREAK_BEFORE or unicodedata.category(after[0]) in ("Pe", "Pf", "Po"):
        return False
    return unicodedata.category(before[-1]) not in ("Ps", "Pi")


def fit_paragraph(
    text: str,
    max_width: float,
    max_lines: int,
    max_size: int,
    min_size: int,
    bold: bool = False,
    step: int = 2,
) -> FittedText:
    """The largest font size at which `text` wraps into at most `max_lines` lines.

    If even `min_size` needs more lines, the text is cut after `max_lines` lines and the
    last kept line ends in an ellipsis.
    """
    size = max_size
    while True:
        font = text_font(size, bold)
        lines = wrap_words(text, font, max_width)
        if len(lines) <= max_lines or size - step < min_size:
            break
        size -= step
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = ellipsize(lines[-1] + ELLIPSIS, font, max_width)
    return FittedText(lines=lines, font=font, size=size)


def fit_line(
    text: str, max_width: float, max_size: int, min_size: int, bold: bool = False, step: int = 2
) -> FittedText:
    """One line of text: shrunk down to `min_size` to fit, then ellipsized if still too wide."""
    size = max_size
    font = text_font(size, bold)
    while text_width(text, font) > max_width and size - step >= min_size:
        size -= step
        font = text_font(size, bold)
    return FittedText(lines=[ellipsize(text, font, max_width)], font=font, size=size)
