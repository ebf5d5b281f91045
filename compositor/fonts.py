"""Fonts for the news graphics: the primary face and the fallback chain behind it.

Job cards arrive in any script, so no single face can draw them. Every character is drawn
from the first face in this chain that has it (see text_runs for how a line is split into
runs of one face each):

1. DejaVu Sans (regular/bold), shipped in the package: Latin, Cyrillic, Greek, Arabic,
   Hebrew and most symbols.
2. Noto Sans Devanagari (regular/bold), shipped: Hindi, Marathi, Nepali.
3. Noto Emoji, shipped: monochrome emoji (a colour emoji font is a bitmap font of about
   10 MB that Pillow draws only at its one strike size; not worth it for a news card).
   Emoji that ask for emoji presentation try this face first, so that a ☕ that DejaVu
   also draws as a text symbol looks like the other emoji on the card.
4. Noto Sans CJK, from the ``noto-cjk-sans-otc`` dependency (20 MB, too big to keep in the
   repository): Chinese, Japanese, Korean; its Japanese or Korean face for a line with kana
   or hangul, so that shared ideographs take that language's forms.
5. Whatever fontconfig finds on this machine for a character none of the above has
   (``fc-list :charset=...``), looked up once per character. Last, so that the same card
   draws the same on every machine wherever our own faces can draw it.

A character no face has is not drawn as a box: text_runs draws U+FFFD in its place and
reports it. If the packaged files are missing we still render with Pillow's built-in
scalable font rather than fail a whole video over typography.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from io import BytesIO
from pathlib import Path

from PIL import ImageFont

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

log = logging.getLogger(__name__)

FONT_PACKAGE = "talkinghead.assets.fonts"
REGULAR_FILE = "DejaVuSans.ttf"
BOLD_FILE = "DejaVuSans-Bold.ttf"
DEVANAGARI_FILES = ("NotoSansDevanagari-Regular.ttf", "NotoSansDevanagari-Bold.ttf")
EMOJI_FILE = "NotoEmoji-VariableWeight.ttf"
EMOJI_WEIGHTS = (400.0, 700.0)  # its wght axis for regular and bold
CJK_PACKAGE = "noto_cjk_sans_otc"
CJK_FILE = "NotoSansCJK-Regular.ttc"
CJK_FACES = {"jp": 0, "kr": 1, "sc": 2, "tc": 3, "hk": 4}  # face index in the collection

SYSTEM_FONTS = os.environ.get("TALKINGHEAD_SYSTEM_FONTS", "1") != "0"
"""Look characters our own faces lack up through fontconfig (TALKINGHEAD_SYSTEM_FONTS=0: don't)."""
FC_LIST = "fc-list"
FC_TIMEOUT_S = 5.0


@functools.lru_cache(maxsize=64)
def load_font(size: int, bold: bool = False) -> Font:
    """The packaged DejaVu face at `size` pixels, or Pillow's default font as a fallback."""
    data = _packaged_font_bytes(BOLD_FILE if bold else REGULAR_FILE)
    if data is None:
        return ImageFont.load_default(size=size)
    # truetype() keeps reading from the file object, so hand it one that lives with the font.
    return ImageFont.truetype(BytesIO(data), size=size)


@functools.lru_cache(maxsize=8)
def _packaged_font_bytes(name: str) -> bytes | None:
    try:
        return resources.files(FONT_PACKAGE).joinpath(name).read_bytes()
    except (ModuleNotFoundError, OSError):
        return None


@dataclass(frozen=True, eq=False)
class Face:
    """One font face of the chain: where it comes from and which characters it has."""

    name: str
    origin: str
    """'packaged', the PyPI package it comes from, or 'fontconfig'."""
    coverage: frozenset[int] = field(repr=False)
    opener: Callable[[int], ImageFont.FreeTypeFont] = field(repr=False)
    """Opens the face at a pixel size."""
    synthetic_bold: bool = False
    """Bold drawn by stroking the regular outlines (the face has no bold of its own)."""
    emoji: bool = False
    cjk: bool = False

    def has(self, code_point: int) -> bool:
        return code_point in self.coverage

    def font(self, size: int) -> ImageFont.FreeTypeFont:
        return _sized(self, size)


@functools.lru_cache(maxsize=256)
def _sized(face: Face, size: int) -> ImageFont.FreeTypeFont:
    return face.opener(size)


@functools.lru_cache(maxsize=64)
def _coverage(source: str | bytes, index: int = 0) -> frozenset[int]:
    """The code points a font file's character map has."""
    from fontTools.ttLib import TTFont

    handle = BytesIO(source) if isinstance(source, bytes) else source
    with TTFont(handle, fontNumber=index, lazy=True) as font:
        return frozenset(font.getBestCmap() or ())


def _packaged_face(
    name: str, file: str, *, weight: float | None = None, emoji: bool = False,
    opener: Callable[[int], ImageFont.FreeTypeFont] | None = None,
) -> Face | None:
    data = _packaged_font_bytes(file)
    if data is None:
        return None

    def open_packaged(size: int) -> ImageFont.FreeTypeFont:
        font = ImageFont.truetype(BytesIO(data), size=size)
        if weight is not None:
            font.set_variation_by_axes([weight])
        return font

    return Face(name, "packaged", _coverage(data), opener or open_packaged, emoji=emoji)


def cjk_font_path() -> Path | None:
    """Noto Sans CJK's collection as installed by the noto-cjk-sans-otc package, if it is."""
    try:
        path = resources.files(CJK_PACKAGE).joinpath(CJK_FILE)
    except ModuleNotFoundError:
        return None
    return Path(str(path)) if path.is_file() else None


@functools.lru_cache(maxsize=16)
def cjk_face(variant: str = "sc", bold: bool = False) -> Face | None:
    """Noto Sans CJK's face for `variant` (sc, tc, hk, jp, kr); bold is synthetic (the
    package carries the regular weight only)."""
    path = cjk_font_path()
    if path is None:
        return None
    index = CJK_FACES[variant]

    def opener(size: int) -> ImageFont.FreeTypeFont:
        return ImageFont.truetype(str(path), size=size, index=index)

    name = f"Noto Sans CJK {variant.upper()}"
    return Face(name, "noto-cjk-sans-otc", _coverage(str(path), index), opener,
                synthetic_bold=bold, cjk=True)


@functools.lru_cache(maxsize=2)
def font_chain(bold: bool = False) -> tuple[Face, ...]:
    """Our own faces, in the order they are tried (fontconfig's come after them)."""
    suffix = " Bold" if bold else ""
    faces = [
        # The primary face opens through load_font, so that its fonts are load_font's own.
        _packaged_face("DejaVu Sans" + suffix, BOLD_FILE if bold else REGULAR_FILE,
                       opener=lambda size: load_font(size, bold)),
        _packaged_face("Noto Sans Devanagari" + suffix, DEVANAGARI_FILES[bold]),
        _packaged_face("Noto Emoji", EMOJI_FILE, weight=EMOJI_WEIGHTS[bold], emoji=True),
        cjk_face("sc", bold),
    ]
    return tuple(face for face in faces if face is not None)


def system_face_for(code_point: int) -> Face | None:
    """A face on this machine that has `code_point`, found through fontconfig; None if
    lookups are off, fontconfig is not installed or no scalable outline font has it."""
    if not SYSTEM_FONTS:
        return None
    fc_list = shutil.which(FC_LIST)
    return None if fc_list is None else _fontconfig_face_for(code_point, fc_list)


@functools.lru_cache(maxsize=1024)
def _fontconfig_face_for(code_point: int, fc_list: str) -> Face | None:
    try:
        found = subprocess.run(
            [fc_list, "--format", "%{file}\t%{index}\n",
             f":charset={code_point:x}:scalable=true:outline=true"],
            capture_output=True, text=True, timeout=FC_TIMEOUT_S, check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError) as error:
        log.warning("fontconfig lookup for U+%04X failed: %s", code_point, error)
        return None
    candidates = sorted({tuple(line.split("\t")[:2]) for line in found.splitlines() if "\t" in line})
    for path, index in candidates:
        face = _system_face(path, int(index) if index.isdigit() else 0)
        if face is not None and face.has(code_point):
            return face
    return None


@functools.lru_cache(maxsize=64)
def _system_face(path: str, index: int) -> Face | None:
    try:
        coverage = _coverage(path, index)
        name = ImageFont.truetype(path, size=12, index=index).getname()
    except Exception as error:  # noqa: BLE001 - any font fontconfig lists may be unreadable
        log.warning("font %s (face %d) from fontconfig is unusable: %s", path, index, error)
        return None

    def opener(size: int) -> ImageFont.FreeTypeFont:
        return ImageFont.truetype(path, size=size, index=index)

    return Face(" ".join(part for part in name if part), "fontconfig", coverage, opener,
                synthetic_bold=True)


def is_ignorable(code_point: int) -> bool:
    """Joiners and selectors that change how their neighbours are drawn but have no glyph
    of their own: a face need not have them."""
    return (
        code_point in (0x200C, 0x200D, 0x034F)
        or 0xFE00 <= code_point <= 0xFE0F
        or 0xE0100 <= code_point <= 0xE01EF
        or 0xE0020 <= code_point <= 0xE007F
    )


def is_emoji_presentation(code_point: int) -> bool:
    """Drawn as emoji by default (Unicode's Emoji_Presentation, by block: close enough to
    decide which face to try first)."""
    return (
        0x1F000 <= code_point <= 0x1FAFF and not 0x1F100 <= code_point <= 0x1F1E5
    ) or code_point in _BMP_EMOJI_PRESENTATION


def is_format_character(char: str) -> bool:
    return unicodedata.category(char) == "Cf" and not is_ignorable(ord(char))


# Unicode 15.1 emoji-data.txt, Emoji_Presentation=Yes, below U+10000.
_BMP_EMOJI_PRESENTATION = frozenset(
    [0x231A, 0x231B, 0x23E9, 0x23EA, 0x23EB, 0x23EC, 0x23F0, 0x23F3, 0x25FD, 0x25FE, 0x2614,
     0x2615, *range(0x2648, 0x2654), 0x267F, 0x2693, 0x26A1, 0x26AA, 0x26AB, 0x26BD, 0x26BE,
     0x26C4, 0x26C5, 0x26CE, 0x26D4, 0x26EA, 0x26F2, 0x26F3, 0x26F5, 0x26FA, 0x26FD, 0x2705,
     0x270A, 0x270B, 0x2728, 0x274C, 0x274E, 0x2753, 0x2754, 0x2755, 0x2757, 0x2795, 0x2796,
     0x2797, 0x27B0, 0x27BF, 0x2B1B, 0x2B1C, 0x2B50, 0x2B55]
)
