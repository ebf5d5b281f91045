"""Making text fit a box: shrink first, then wrap, then cut with an ellipsis.

Job cards come from users, so a title can be three words or thirty. Every text element
on the frame is laid out through these helpers, which guarantee the result is never
wider than its box and never has more lines than allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

from .fonts import Font, load_font

ELLIPSIS = "…"


@dataclass(frozen=True)
class FittedText:
    """Lines of text set in one font, each known to fit the width they were fitted to."""

    lines: list[str]
    font: Font
    size: int

    @property
    def line_height(self) -> int:
        ascent, descent = self.font.getmetrics()
        return int(round((ascent + descent) * 1.08))

    @property
    def height(self) -> int:
        return self.line_height * len(self.lines)


def text_width(text: str, font: Font) -> float:
    return float(font.getlength(text))


def ellipsize(text: str, font: Font, max_width: float) -> str:
    """`text` itself if it fits, else its longest prefix that fits with an ellipsis added."""
    if text_width(text, font) <= max_width:
        return text
    lo, hi = 0, len(text)  # binary search on how many characters to keep
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if text_width(text[:mid].rstrip() + ELLIPSIS, font) <= max_width:
            lo = mid
        else:
            hi = mid - 1
    kept = text[:lo].rstrip()
    return kept + ELLIPSIS if text_width(kept + ELLIPSIS, font) <= max_width else ""


def wrap_words(text: str, font: Font, max_width: float) -> list[str]:
    """Greedy word wrap; a single word wider than the box is ellipsized on its own line."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if text_width(candidate, font) <= max_width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = word if text_width(word, font) <= max_width else ellipsize(word, font, max_width)
    if current:
        lines.append(current)
    return lines


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
        font = load_font(size, bold)
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
    font = load_font(size, bold)
    while text_width(text, font) > max_width and size - step >= min_size:
        size -= step
        font = load_font(size, bold)
    return FittedText(lines=[ellipsize(text, font, max_width)], font=font, size=size)
