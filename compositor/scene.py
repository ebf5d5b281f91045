"""What a news frame shows (NewsScene) and where everything goes (NewsLayout).

Content and geometry are kept apart so that the same job card can be laid out for a
different format later, and so the renderer and the tests share one source of truth for
every rectangle on the 1920x1080 frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

Rect = tuple[int, int, int, int]
"""(x0, y0, x1, y1) in frame pixels; x1 and y1 are exclusive."""

Color = tuple[int, int, int]

TICKER_SEPARATOR = " · "


@dataclass
class NewsScene:
    """The editorial content of the frame: the job card, the channel and the ticker."""

    title: str
    company: str
    location: str
    skills: list[str] = field(default_factory=list)
    channel_name: str = "TALKINGHEAD NEWS"
    logo_path: Path | None = None
    """Optional logo image, fitted into the corner trapezoid instead of the channel name."""
    ticker_text: str | None = None
    """Scrolling text; derived from the card when left out."""
    kicker: str = "NOW HIRING"
    ticker_label: str = "JOBS"

    def resolved_ticker_text(self) -> str:
        """The ticker text, ending in a separator so that it loops into itself seamlessly."""
        if self.ticker_text is not None and self.ticker_text.strip():
            text = self.ticker_text.strip()
        else:
            parts = [self.kicker, f"{self.title} at {self.company}", self.location]
            if self.skills:
                parts.append("Skills: " + ", ".join(self.skills))
            text = TICKER_SEPARATOR.join(p.strip() for p in parts if p and p.strip())
        return text + TICKER_SEPARATOR


@dataclass(frozen=True)
class NewsLayout:
    """Geometry and palette of the 1920x1080 news frame; every area is an explicit rect."""

    width: int = 1920
    height: int = 1080

    # Background: a subtle vertical gradient around #0b0f17.
    background_top: Color = (17, 23, 35)
    background_bottom: Color = (7, 9, 14)

    # The red accent bar across the top, which the logo trapezoid hangs from.
    accent: Color = (215, 38, 61)
    accent_bar: Rect = (0, 0, 1920, 12)

    # Channel logo (or name) in a trapezoid at the top right.
    logo: Rect = (1500, 12, 1920, 92)
    logo_slant_px: int = 44

    # The talking head, framed on the left.
    head_panel: Rect = (60, 90, 960, 950)
    head_border_px: int = 3
    head_border: Color = (58, 68, 88)

    # The job card on the right.
    card: Rect = (1020, 150, 1860, 950)
    card_fill: Color = (19, 26, 40)
    card_stripe_px: int = 8
    card_padding_px: int = 44
    text_primary: Color = (244, 246, 250)
    text_secondary: Color = (178, 188, 204)
    text_label: Color = (128, 140, 160)
    chip_fill: Color = (33, 44, 64)
    chip_outline: Color = (64, 80, 108)

    # The ticker band along the bottom, with its label box on the left.
    ticker_band: Rect = (0, 1010, 1920, 1080)
    ticker_fill: Color = (4, 5, 8)
    ticker_label: Rect = (0, 1010, 200, 1080)
    ticker_label_slant_px: int = 22
    ticker_text_color: Color = (240, 242, 246)
    ticker_font_px: int = 32
    ticker_speed_px_per_s: float = 150.0

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def head_inner(self) -> Rect:
        """The part of the head panel the video fills: the panel minus its border."""
        x0, y0, x1, y1 = self.head_panel
        b = self.head_border_px
        return x0 + b, y0 + b, x1 - b, y1 - b

    @property
    def ticker_crawl(self) -> Rect:
        """Where the ticker text scrolls: the band to the right of the label box."""
        _, y0, x1, y1 = self.ticker_band
        return self.ticker_label[2] + self.ticker_label_slant_px, y0, x1, y1

    @property
    def card_inner(self) -> Rect:
        """The card's text area: inside its padding and clear of the red stripe."""
        x0, y0, x1, y1 = self.card
        p = self.card_padding_px
        return x0 + self.card_stripe_px + p, y0 + p, x1 - p, y1 - p
