"""The motion stage's options: defined once here, and mapped to and from the wire here.

``MotionOptions`` is everything a job can ask of the motion stage, with its defaults and
its ranges (the ranges are option_ranges.py's table, the one the server enforces). The job
spec's ``RenderOptions`` extends it, so a job states the same fields; the orchestrator's
client sends it with ``options_to_proto``; the server reads it back with
``options_from_proto`` and hands it to the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from talkinghead.services.common import option_ranges as ranges
from talkinghead.services.common.errors import InputError
from talkinghead.services.common.option_ranges import check_range
from talkinghead.services.motion.driving import (
    ANIMATION_REGIONS,
    DRIVING_OPTIONS,
    AnimationRegion,
    DrivingOption,
    DrivingSettings,
)
from talkinghead.v1 import motion_pb2


class MotionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # output rate; the template is resampled to it
    fps: float = Field(default=25.0, ge=ranges.MOTION_FPS.low, le=ranges.MOTION_FPS.high)
    # longest side of the output frames; the photo is scaled down to it, never up
    max_side: int = Field(default=1024, ge=ranges.MOTION_MAX_SIDE.low,
                          le=ranges.MOTION_MAX_SIDE.high)
    # motion relative to the template's first frame (the photo's own pose kept); False: the
    # template's absolute pose
    relative_motion: bool = True
    # scales the expression part of the motion
    expression_multiplier: float = Field(default=1.0, ge=ranges.MOTION_EXPRESSION_MULTIPLIER.low,
                                         le=ranges.MOTION_EXPRESSION_MULTIPLIER.high)
    # LivePortrait stitching: the animated crop pastes back without a seam at the shoulders
    stitching: bool = True
    # LivePortrait retargeting: eye / lip openness from the template (needs the landmark
    # ONNX models and a template with ratios)
    eye_retargeting: bool = False
    lip_retargeting: bool = False
    # LivePortrait's driving options (driving.py). Which parts of the template's motion
    # reach the photo. Ours by default: head pose and eyes, because lipsync redraws the mouth
    # afterwards and the template's mouth and jaw (someone else's speech) would fight it;
    # upstream's command line is ``animation_region="all"``.
    animation_region: AnimationRegion = "pose+eyes"
    # upstream's command-line default; for a photo with relative motion it equals pose-friendly
    driving_option: DrivingOption = "expression-friendly"
    # scales the whole driving motion, last (upstream's driving_multiplier)
    driving_multiplier: float = Field(default=1.0, ge=ranges.MOTION_DRIVING_MULTIPLIER.low,
                                      le=ranges.MOTION_DRIVING_MULTIPLIER.high)
    # close the photo's mouth before animation (needs the photo's 203 landmarks)
    normalize_lip: bool = False

    def cache_key(self) -> str:
        """Stable text for the motion-clip cache key. The driving options appear only where
        they differ from the motion rendered before they existed (region all, pose-friendly,
        multiplier 1, no lip normalisation), so clips cached then keep their keys."""
        text = (
            f"fps={self.fps:g};side={self.max_side};rel={int(self.relative_motion)};"
            f"expr={self.expression_multiplier:g};stitch={int(self.stitching)};"
            f"eye={int(self.eye_retargeting)};lip={int(self.lip_retargeting)}"
        )
        driving = (self.animation_region, self.driving_option, self.driving_multiplier,
                   self.normalize_lip)
        if driving != ("all", "pose-friendly", 1.0, False):
            text += (f";region={self.animation_region};drive={self.driving_option};"
                     f"dmult={self.driving_multiplier:g};normlip={int(self.normalize_lip)}")
        return text

    def driving(self) -> DrivingSettings:
        """The driving options as driving.py takes them."""
        return DrivingSettings(region=self.animation_region, option=self.driving_option,
                               multiplier=self.driving_multiplier,
                               normalize_lip=self.normalize_lip, relative=self.relative_motion)


DEFAULTS = MotionOptions()


def options_to_proto(options: MotionOptions) -> motion_pb2.MotionOptions:
    """Every field set explicitly: the server applies no default of its own."""
    return motion_pb2.MotionOptions(
        fps=options.fps,
        max_side=options.max_side,
        relative_motion=options.relative_motion,
        expression_multiplier=options.expression_multiplier,
        stitching=options.stitching,
        eye_retargeting=options.eye_retargeting,
        lip_retargeting=options.lip_retargeting,
        animation_region=options.animation_region,
        driving_option=options.driving_option,
        driving_multiplier=options.driving_multiplier,
        normalize_lip=options.normalize_lip,
    )


def options_from_proto(msg: motion_pb2.MotionOptions) -> MotionOptions:
    """The options with unset fields at their defaults; InputError naming the field for a
    value out of its documented range.

    fps 0 (unset) stays 0 here: it means the template's own rate, known once the template
    is loaded (the server then sets it with ``model_copy(update={"fps": template.fps})``).
    """
    if msg.fps != 0:
        check_range(msg.fps, ranges.MOTION_FPS, "options.fps")
    if msg.max_side != 0:
        check_range(msg.max_side, ranges.MOTION_MAX_SIDE, "options.max_side")

    def given(name: str):
        return getattr(msg, name) if msg.HasField(name) else getattr(DEFAULTS, name)

    expression = given("expression_multiplier")
    check_range(expression, ranges.MOTION_EXPRESSION_MULTIPLIER, "options.expression_multiplier")
    driving_multiplier = given("driving_multiplier")
    check_range(driving_multiplier, ranges.MOTION_DRIVING_MULTIPLIER, "options.driving_multiplier")
    region = msg.animation_region or DEFAULTS.animation_region
    if region not in ANIMATION_REGIONS:
        raise InputError(f"options.animation_region must be one of {', '.join(ANIMATION_REGIONS)}; "
                         f"got {region[:40]!r}")
    option = msg.driving_option or DEFAULTS.driving_option
    if option not in DRIVING_OPTIONS:
        raise InputError(f"options.driving_option must be one of {', '.join(DRIVING_OPTIONS)}; "
                         f"got {option[:40]!r}")
    # checked above with the wire's own messages; built unvalidated for the fps-0 case
    return MotionOptions.model_construct(
        fps=msg.fps,
        max_side=msg.max_side or DEFAULTS.max_side,
        relative_motion=given("relative_motion"),
        expression_multiplier=expression,
        stitching=given("stitching"),
        eye_retargeting=msg.eye_retargeting,
        lip_retargeting=msg.lip_retargeting,
        animation_region=region,
        driving_option=option,
        driving_multiplier=driving_multiplier,
        normalize_lip=msg.normalize_lip,
    )


@dataclass
class MotionReport:
    """What an engine did with the driving options of one request, filled in by the engine
    before its first frame: the task result and the motion cache keep it."""

    motion_multiplier: float = 1.0  # expression-friendly's automatic m
    lip_normalized: bool = False
    notes: list[str] = field(default_factory=list)  # options not applied, with the reason

    def to_proto(self) -> motion_pb2.MotionReport:
        return motion_pb2.MotionReport(motion_multiplier=self.motion_multiplier,
                                       lip_normalized=self.lip_normalized, notes=self.notes)

    @classmethod
    def from_proto(cls, msg: motion_pb2.MotionReport) -> MotionReport:
        return cls(motion_multiplier=msg.motion_multiplier or 1.0,
                   lip_normalized=msg.lip_normalized, notes=list(msg.notes))

    def to_dict(self) -> dict:
        return {"motion_multiplier": self.motion_multiplier,
                "lip_normalized": self.lip_normalized, "notes": list(self.notes)}
