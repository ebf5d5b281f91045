"""Motion settings, mirroring ``talkinghead.v1.MotionOptions`` with the defaults filled in."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MotionOptions:
    fps: float = 25.0  # output rate; the template is resampled to it
    max_side: int = 1024  # longest side of the output frames
    relative_motion: bool = True  # motion relative to the template's first frame
    expression_multiplier: float = 1.0
    stitching: bool = True
    eye_retargeting: bool = False
    lip_retargeting: bool = False

    def cache_key(self) -> str:
        """Stable text for the motion-clip cache key."""
        return (
            f"fps={self.fps:g};side={self.max_side};rel={int(self.relative_motion)};"
            f"expr={self.expression_multiplier:g};stitch={int(self.stitching)};"
            f"eye={int(self.eye_retargeting)};lip={int(self.lip_retargeting)}"
        )
