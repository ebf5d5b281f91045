"""The Unicode bidirectional algorithm (UAX #9) for one line of card text, without explicit
embeddings: enough to put runs of different fonts in visual order.

A line set in one face is handed to Pillow's raqm layout whole, which does the full
algorithm itself. A line that needs several faces is drawn run by run, and the runs must
be placed in the order the reader sees them; this module gives each character its
embedding level (even: left to right, odd: right to left) and orders runs by level.
Explicit directional formatting characters are removed before layout (text_runs), and
isolates are treated as neutrals; brackets are not paired (rule N0), so a bracket between
scripts takes the direction of the paragraph.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

_STRONG = {"L", "R", "AL"}
_NEUTRAL = {"B", "S", "WS", "ON", "LRI", "RLI", "FSI", "PDI"}


def paragraph_level(text: str) -> int:
    """0 (left to right) or 1 (right to left): the direction of the first strong character."""
    for char in text:
        kind = unicodedata.bidirectional(char)
        if kind == "L":
            return 0
        if kind in ("R", "AL"):
            return 1
    return 0


def embedding_levels(text: str, base: int | None = None) -> list[int]:
    """The resolved embedding level of every character of `text` (one line)."""
    if not text:
        return []
    level = paragraph_level(text) if base is None else base
    original = [unicodedata.bidirectional(c) or "L" for c in text]
    types = list(original)
    sos = "R" if level % 2 else "L"
    n = len(types)

    # X9 (approximately): boundary neutrals take the type of what precedes them, like NSM.
    # W1: a nonspacing mark takes the type of the character before it.
    previous = sos
    for i, kind in enumerate(types):
        if kind in ("NSM", "BN"):
            types[i] = previous if previous not in ("LRI", "RLI", "FSI", "PDI") else "ON"
        previous = types[i]
    # W2: European numbers after Arabic letters are Arabic numbers. W3: AL is R.
    last_strong = sos
    for i, kind in enumerate(types):
        if kind in _STRONG:
            last_strong = kind
        elif kind == "EN" and last_strong == "AL":
            types[i] = "AN"
    types = ["R" if kind == "AL" else kind for kind in types]
    # W4: a single separator between two numbers of the same kind joins them.
    for i in range(1, n - 1):
        before, here, after = types[i - 1], types[i], types[i + 1]
        if here == "ES" and before == after == "EN":
            types[i] = "EN"
        elif here == "CS" and before == after and before in ("EN", "AN"):
            types[i] = before
    # W5: terminators (%, $, #...) next to European numbers become European numbers.
    i = 0
    while i < n:
        if types[i] != "ET":
            i += 1
            continue
        j = i
        while j < n and types[j] == "ET":
            j += 1
        if (i > 0 and types[i - 1] == "EN") or (j < n and types[j] == "EN"):
            types[i:j] = ["EN"] * (j - i)
        i = j
    # W6: separators and terminators left over are neutral.
    types = ["ON" if kind in ("ES", "ET", "CS") else kind for kind in types]
    # W7: European numbers after left-to-right text are left to right.
    last_strong = sos
    for i, kind in enumerate(types):
        if kind in ("L", "R"):
            last_strong = kind
        elif kind == "EN" and last_strong == "L":
            types[i] = "L"
    # N1/N2: neutrals between two strong types of one direction take it (numbers count as
    # R); others take the paragraph's direction.
    i = 0
    while i < n:
        if types[i] not in _NEUTRAL:
            i += 1
            continue
        j = i
        while j < n and types[j] in _NEUTRAL:
            j += 1
        before = _strong_direction(types[i - 1]) if i > 0 else sos
        after = _strong_direction(types[j]) if j < n else sos
        resolved = before if before == after else sos
        types[i:j] = [resolved] * (j - i)
        i = j
    # I1/I2: implicit levels.
    levels = []
    for kind in types:
        if level % 2 == 0:
            levels.append(level + (1 if kind == "R" else 2 if kind in ("AN", "EN") else 0))
        else:
            levels.append(level + (1 if kind in ("L", "EN", "AN") else 0))
    # L1: whitespace at the end of the line goes back to the paragraph level.
    for i in range(n - 1, -1, -1):
        if original[i] in ("WS", "S", "B", "BN", "LRI", "RLI", "FSI", "PDI"):
            levels[i] = level
        else:
            break
    return levels


def _strong_direction(kind: str) -> str:
    return "L" if kind == "L" else "R"


def visual_order(levels: Sequence[int]) -> list[int]:
    """Indices of items (characters or runs of one level) in the order they are drawn, left
    to right (rule L2: reverse every sequence at each level from the highest down to the
    lowest odd one)."""
    order = list(range(len(levels)))
    odd = [level for level in levels if level % 2]
    if not odd:
        return order
    for level in range(max(levels), min(odd) - 1, -1):
        i = 0
        while i < len(order):
            if levels[order[i]] < level:
                i += 1
                continue
            j = i
            while j < len(order) and levels[order[j]] >= level:
                j += 1
            order[i:j] = order[i:j][::-1]
            i = j
    return order
