"""The documented range of every numeric field of a request, enforced by each server.

One table for the three servers (and the same figures as the job spec's ``RenderOptions``;
a test holds the two together): a value out of range is refused with INVALID_ARGUMENT naming
the field and its range, before any work. Proto3 cannot tell 0 from unset for plain scalars,
so where a field says "0 means ..." the value 0 is the unset case, not part of the range.
"""

from __future__ import annotations

from dataclasses import dataclass

from talkinghead.services.common.errors import InputError


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    unset: str = ""  # what 0 / unset means, when the field has such a case

    def text(self) -> str:
        return f"{self.low:g}..{self.high:g}"


# MotionService.Animate
MOTION_FPS = Range(10.0, 60.0, "0 means the template's own rate")
MOTION_MAX_SIDE = Range(128, 4096, "0 means 1024")
MOTION_EXPRESSION_MULTIPLIER = Range(0.0, 3.0, "unset means 1.0")
MOTION_CHUNK_FRAMES = Range(1, 256, "0 means the server's default")
# LipSyncService.Sync (required: no unset case)
LIPSYNC_FPS = Range(10.0, 60.0)
# RestoreService.Restore
RESTORE_WEIGHT = Range(0.0, 1.0, "unset means 0.5")


def check_range(value: float, allowed: Range, field: str) -> None:
    """Refuse ``value`` (NaN and infinities too) unless ``allowed.low <= value <= allowed.high``."""
    if not allowed.low <= value <= allowed.high:  # NaN compares false: refused too
        unset = f"; {allowed.unset}" if allowed.unset else ""
        raise InputError(f"{field} must be within {allowed.text()}{unset}; got {value:g}")
