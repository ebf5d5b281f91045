"""LivePortrait's driving options: which parts of the template's motion reach the photo, and how.

The keypoint maths of one frame lives in keypoints.py; this file decides, per request, what
of it is used (the behaviour of upstream's ``LivePortraitPipeline.execute`` for an image
source and a template, described step by step in the reference pack's README,
"driving_options.npz"):

- **animation region**: ``all`` moves pose (rotation, translation), scale and every
  expression keypoint; ``pose`` only rotation and translation; ``exp`` every expression
  keypoint; ``lip`` and ``eyes`` only upstream's lip / eye keypoints. ``pose+eyes`` is ours
  (not upstream's): the head turns and the eyes blink, while the mouth and jaw keep the
  photo's own shape, for lipsync to redraw.
- **driving option**: ``expression-friendly`` (upstream's command-line default) scales the
  motion by m = sqrt(hull volume of x_s) / sqrt(hull volume of frame 0's x_d), computed
  once; ``pose-friendly`` leaves it. With an image source and relative motion frame 0's x_d
  is x_s itself, so m is 1 and both options animate a photo alike.
- **lip normalisation**: before animation, the lip retargeting network closes the photo's
  mouth (lip-open ratio driven to 0), when the photo's ratio from its 203 landmarks is at
  least ``LIP_NORMALIZE_THRESHOLD``. Relative motion only, and not together with eye/lip
  retargeting (as upstream).
- **driving multiplier**: applied last to every option: x_d ← x_s + (x_d − x_s) · k.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import torch

from talkinghead.services.motion.keypoints import (
    N_KEYPOINTS,
    DrivingFrame,
    KeypointInfo,
    apply_stitching,
    driving_keypoints,
    retargeting_delta,
)

log = logging.getLogger(__name__)

AnimationRegion = Literal["all", "pose", "exp", "lip", "eyes", "pose+eyes"]
DrivingOption = Literal["expression-friendly", "pose-friendly"]
ANIMATION_REGIONS: tuple[str, ...] = get_args(AnimationRegion)
DRIVING_OPTIONS: tuple[str, ...] = get_args(DrivingOption)

# Upstream's keypoint sets for the lip and eyes regions.
LIP_KEYPOINTS = (6, 12, 14, 17, 19, 20)
EYE_KEYPOINTS = (11, 13, 15, 16, 18)
ALL_KEYPOINTS = tuple(range(N_KEYPOINTS))
# Below this lip-open ratio the photo's mouth counts as closed: no normalisation (upstream's
# ``lip_normalize_threshold``).
LIP_NORMALIZE_THRESHOLD = 0.03


@dataclass(frozen=True)
class RegionParts:
    """What of the template's motion one animation region takes (the rest stays the photo's)."""

    rotation: bool
    translation: bool
    scale: bool
    expression: tuple[int, ...]  # keypoints whose expression follows the template


REGIONS: dict[str, RegionParts] = {
    "all": RegionParts(True, True, True, ALL_KEYPOINTS),
    "pose": RegionParts(True, True, False, ()),
    "exp": RegionParts(False, False, False, ALL_KEYPOINTS),
    "lip": RegionParts(False, False, False, LIP_KEYPOINTS),
    "eyes": RegionParts(False, False, False, EYE_KEYPOINTS),
    "pose+eyes": RegionParts(True, True, False, EYE_KEYPOINTS),
}


def region_parts(region: str) -> RegionParts:
    try:
        return REGIONS[region]
    except KeyError:
        raise ValueError(f"unknown animation region {region!r} (one of {', '.join(REGIONS)})") from None


def hull_volume(points: np.ndarray) -> float:
    """Volume of the 3-D convex hull of [21, 3] keypoints (0 for a flat or degenerate set)."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        return float(ConvexHull(np.asarray(points, dtype=np.float64).reshape(-1, 3)).volume)
    except (QhullError, ValueError):
        return 0.0


def expression_friendly_multiplier(x_s: torch.Tensor, x_d_first: torch.Tensor) -> float:
    """Upstream's automatic multiplier m = sqrt(V(x_s)) / sqrt(V(x_d⁰)); 1 where a hull is
    degenerate (no volume to compare)."""
    source, driving = hull_volume(x_s[0].cpu().numpy()), hull_volume(x_d_first[0].cpu().numpy())
    if source <= 0.0 or driving <= 0.0:
        log.warning("expression-friendly: degenerate keypoint hull (volumes %g, %g); m = 1",
                    source, driving)
        return 1.0
    return float(np.sqrt(source) / np.sqrt(driving))


@dataclass(frozen=True)
class DrivingSettings:
    """The driving options of one request (MotionOptions' fields of the same names)."""

    region: str = "all"
    option: str = "pose-friendly"
    multiplier: float = 1.0
    normalize_lip: bool = False
    relative: bool = True


@dataclass
class SourceDriving:
    """Per photo, computed once: its keypoints and what the options derive from them."""

    info: KeypointInfo
    x_s: torch.Tensor  # [1, 21, 3]
    motion_multiplier: float = 1.0  # expression-friendly's m (1 for pose-friendly)
    x_d_first: torch.Tensor | None = None  # expression-friendly's x_d⁰ (frame 0's x_d)
    lip_delta: torch.Tensor | None = None  # [1, 21, 3]: lip normalisation's offsets
    notes: list[str] = field(default_factory=list)  # what was not done, and why


def lip_normalisation(
    x_s: torch.Tensor, lip_ratio: float | None, lip_mlp: Callable[[torch.Tensor], torch.Tensor],
    threshold: float = LIP_NORMALIZE_THRESHOLD,
) -> tuple[torch.Tensor | None, str]:
    """(offsets that close the photo's mouth, or None; a note saying what happened).

    The lip MLP gets [x_s, photo's lip-open ratio, 0]: drive the lips to closed. A ratio
    below ``threshold`` means the mouth is already closed; without the photo's 203 landmarks
    there is no ratio, and nothing is guessed.
    """
    if lip_ratio is None:
        return None, ("lip normalisation not applied: the photo's lip-open ratio needs "
                      "LivePortrait's 203-point landmarks (the official crop's landmark model), "
                      "which this engine does not have")
    if lip_ratio < threshold:
        return None, (f"lip normalisation not needed: the photo's lip-open ratio {lip_ratio:.3f} "
                      f"is below {threshold:g} (mouth closed)")
    ratios = torch.tensor([[lip_ratio, 0.0]], dtype=x_s.dtype, device=x_s.device)
    return retargeting_delta(x_s, ratios, lip_mlp), ""


def prepare_source(
    info: KeypointInfo, first: DrivingFrame, settings: DrivingSettings,
    lip_ratio: float | None = None,
    lip_mlp: Callable[[torch.Tensor], torch.Tensor] | None = None,
    retargeting: bool = False,
) -> SourceDriving:
    """The photo's side of the driving options: expression-friendly's m from frame 0, and
    the lip normalisation offsets (``lip_ratio``: the photo's lip-open ratio from its 203
    landmarks, None when they are not known)."""
    x_s = info.keypoints()
    source = SourceDriving(info=info, x_s=x_s)
    if settings.option == "expression-friendly" and settings.relative:
        source.x_d_first, _ = driving_keypoints(info, first, first, True,
                                                region_parts(settings.region))
        source.motion_multiplier = expression_friendly_multiplier(x_s, source.x_d_first)
    if settings.normalize_lip:
        if not settings.relative:
            source.notes.append("lip normalisation not applied: it works with relative motion only")
        elif retargeting:
            source.notes.append("lip normalisation not applied: eye/lip retargeting replaces it")
        elif lip_mlp is None:
            source.notes.append("lip normalisation not applied: no lip retargeting network")
        else:
            source.lip_delta, note = lip_normalisation(x_s, lip_ratio, lip_mlp)
            if note:
                source.notes.append(note)
    return source


def drive_batch(
    source: SourceDriving, frames: DrivingFrame, first: DrivingFrame, settings: DrivingSettings,
    stitching: Callable[[torch.Tensor], torch.Tensor] | None,
    retarget: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The keypoints handed to the warping network for a batch of template frames, in
    upstream's order: region → keypoints → expression-friendly → stitching (+ lip
    normalisation) or retargeting → driving multiplier."""
    batch = frames.R.shape[0]
    x_s = source.x_s.expand(batch, -1, -1)
    x_d, _ = driving_keypoints(source.info, frames, first, settings.relative,
                               region_parts(settings.region))
    if source.x_d_first is not None:  # expression-friendly, relative motion
        x_d = x_s + (x_d - source.x_d_first) * source.motion_multiplier
    lip = source.lip_delta
    if retarget is not None:
        x_d = retarget(x_s, x_d)
        if stitching is not None:
            x_d, _ = apply_stitching(x_s, x_d, stitching)
    else:
        if stitching is not None:
            x_d, _ = apply_stitching(x_s, x_d, stitching)
        if lip is not None:
            x_d = x_d + lip
    if settings.multiplier != 1.0:
        x_d = x_s + (x_d - x_s) * settings.multiplier
    return x_d
