"""The job card: kicker tag, title, company, location and skill chips, top to bottom.

The card's text is laid out as a column flowing downward. Each block is fitted to the
column's width first (see text_fit) and drawn only if it also fits the height that is
left, so nothing ever spills out of the card; skills that do not fit are summarised by a
final "+N" chip. The finished column is centred vertically in the card.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from .scene import Color, NewsLayout, NewsScene
from .shapes import inclusive, paste_rounded_rect
from .text_fit import FittedText, ellipsize, fit_line, fit_paragraph, text_width
from .text_runs import TextFont, draw_text, text_font

TITLE_MAX_LINES = 3
TITLE_SIZES = (66, 40)
COMPANY_SIZES = (40, 26)
LOCATION_SIZES = (36, 24)
LABEL_SIZE = 21
KICKER_SIZE = 24
KICKER_PAD = (16, 9)

BLOCK_GAP = 30
LABEL_GAP = 8
RULE_SIZE = (96, 4)
CHIP_HEIGHT = 54
CHIP_PAD_X = 24
CHIP_GAP = 12
CHIP_FONT_SIZE = 28

ChipRow = list[tuple[str, int]]
"""One row of chips as (label, chip width in pixels)."""


def draw_job_card(image: Image.Image, scene: NewsScene, layout: NewsLayout) -> None:
    """Draw the card panel, its red edge stripe and its text onto `image`."""
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = layout.card
    draw.rectangle(inclusive(layout.card), fill=layout.card_fill)
    draw.rectangle((x0, y0, x0 + layout.card_stripe_px - 1, y1 - 1), fill=layout.accent)

    # The column is set on a scratch panel of the card's flat colour, then pasted centred.
    ix0, iy0, ix1, iy1 = layout.card_inner
    column = _CardColumn(Image.new("RGB", (ix1 - ix0, iy1 - iy0), layout.card_fill), layout)
    column.fill(scene)
    used = column.bottom
    if used > 0:
        top = iy0 + (iy1 - iy0 - used) // 2
        image.paste(column.image.crop((0, 0, ix1 - ix0, used)), (ix0, top))


class _CardColumn:
    """A cursor moving down a fixed-size panel, drawing blocks only where they fit."""

    def __init__(self, image: Image.Image, layout: NewsLayout) -> None:
        self.image = image
        self.draw = ImageDraw.Draw(image)
        self.layout = layout
        self.width = image.width
        self.y = 0  # where the next block starts (content above plus a gap)
        self.bottom = 0  # the lowest pixel row drawn so far

    def fill(self, scene: NewsScene) -> None:
        layout = self.layout
        self.kicker(scene.kicker)
        self.lines(
            fit_paragraph(scene.title, self.width, TITLE_MAX_LINES, *TITLE_SIZES, bold=True),
            layout.text_primary,
        )
        self.rule(gap_above=14)
        self.labelled(
            "COMPANY",
            fit_line(scene.company, self.width, *COMPANY_SIZES, bold=True),
            layout.text_primary,
        )
        self.labelled(
            "LOCATION",
            fit_line(scene.location, self.width, *LOCATION_SIZES),
            layout.text_secondary,
        )
        self.chips(scene.skills)

    def room_for(self, height: int) -> bool:
        return self.y + height <= self.image.height

    def advance(self, height: int, gap: int = 0) -> None:
        self.bottom = self.y + height
        self.y = self.bottom + gap

    def kicker(self, text: str) -> None:
        """A small red tag ("NOW HIRING") above the title, like a news category label."""
        if not text.strip():
            return
        pad_x, pad_y = KICKER_PAD
        fitted = fit_line(text.upper(), self.width - 2 * pad_x, KICKER_SIZE, 14, bold=True)
        ascent, descent = fitted.font.getmetrics()
        height = ascent + descent + 2 * pad_y
        if not self.room_for(height):
            return
        width = int(text_width(fitted.lines[0], fitted.font)) + 2 * pad_x
        paste_rounded_rect(self.image, (0, self.y, width, self.y + height), 4, self.layout.accent)
        draw_text(self.draw, (pad_x, self.y + height / 2), fitted.lines[0], fitted.font, (255, 255, 255),
                  anchor="lm")
        self.advance(height, BLOCK_GAP - 6)

    def lines(self, text: FittedText, fill: Color, gap: int = 0) -> None:
        """As many of the lines as fit the height left."""
        for line in text.lines:
            if not self.room_for(text.line_height):
                return
            draw_text(self.draw, (0, self.y), line, text.font, fill, anchor="la")
            self.advance(text.line_height)
        self.y += gap

    def rule(self, gap_above: int) -> None:
        """A short red rule closing the title block."""
        width, height = RULE_SIZE
        if not self.room_for(gap_above + height):
            return
        self.y += gap_above
        self.draw.rectangle((0, self.y, width - 1, self.y + height - 1), fill=self.layout.accent)
        self.advance(height, BLOCK_GAP)

    def labelled(self, label_text: str, value: FittedText, fill: Color) -> None:
        """A small grey caps label with its value underneath; skipped whole if it cannot fit."""
        label = fit_line(label_text, self.width, LABEL_SIZE, LABEL_SIZE, bold=True)
        if not value.lines[0] or not self.room_for(label.height + LABEL_GAP + value.height):
            return
        self.lines(label, self.layout.text_label, gap=LABEL_GAP)
        self.lines(value, fill, gap=BLOCK_GAP)

    def chips(self, skills: list[str]) -> None:
        """Skills as rounded chips that wrap onto new rows; the overflow becomes "+N"."""
        skills = [s.strip() for s in skills if s.strip()]
        label = fit_line("SKILLS", self.width, LABEL_SIZE, LABEL_SIZE, bold=True)
        if not skills or not self.room_for(label.height + LABEL_GAP + CHIP_HEIGHT):
            return
        self.lines(label, self.layout.text_label, gap=LABEL_GAP)
        font = text_font(CHIP_FONT_SIZE)
        row_pitch = CHIP_HEIGHT + CHIP_GAP
        max_rows = (self.image.height - self.y + CHIP_GAP) // row_pitch
        for row in flow_chips(skills, font, self.width, max_rows):
            x = 0
            for text, width in row:
                paste_rounded_rect(
                    self.image,
                    (x, self.y, x + width, self.y + CHIP_HEIGHT),
                    CHIP_HEIGHT / 2,
                    self.layout.chip_fill,
                    self.layout.chip_outline,
                    outline_px=2,
                )
                draw_text(self.draw, (x + width / 2, self.y + CHIP_HEIGHT / 2), text, font,
                          self.layout.text_primary, anchor="mm")
                x += width + CHIP_GAP
            self.advance(CHIP_HEIGHT, CHIP_GAP)


def flow_chips(skills: list[str], font: TextFont, max_width: int, max_rows: int) -> list[ChipRow]:
    """Greedy line-breaking of skill chips into at most `max_rows` rows of `max_width`."""
    if max_rows <= 0:
        return []
    rows: list[ChipRow] = [[]]
    for index, skill in enumerate(skills):
        chip = _chip(ellipsize(skill, font, max_width - 2 * CHIP_PAD_X), font)
        if _row_width(rows[-1] + [chip]) <= max_width:
            rows[-1].append(chip)
        elif len(rows) < max_rows:
            rows.append([chip])
        else:
            _end_with_overflow_chip(rows[-1], len(skills) - index, font, max_width)
            break
    return [row for row in rows if row]


def _chip(label: str, font: TextFont) -> tuple[str, int]:
    return label, int(round(text_width(label, font))) + 2 * CHIP_PAD_X


def _row_width(row: ChipRow) -> int:
    return sum(width for _, width in row) + CHIP_GAP * max(0, len(row) - 1)


def _end_with_overflow_chip(row: ChipRow, hidden: int, font: TextFont, max_width: int) -> None:
    """Close the last row with "+N", dropping chips from it until that summary fits."""
    while row and _row_width(row + [_chip(f"+{hidden}", font)]) > max_width:
        row.pop()
        hidden += 1
    row.append(_chip(f"+{hidden}", font))
