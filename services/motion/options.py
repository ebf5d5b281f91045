"""The motion stage's options: defined once here, and mapped to and from the wire here.

``MotionOptions`` is everything a job can ask of the motion stage, with its defaults and
its ranges (the ranges are option_ranges.py's table, the one the server enforces). The job
spec's ``RenderOptions`` extends it, so a job states the same fields; the orchestrator's
client sends it with ``options_to_proto``; the server reads it back with
``options_from_proto`` and hands it to the engine.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from talkinghead.services.common import option_ranges as ranges
from talkinghead.services.common.option_ranges import check_range
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

    def cache_key(self) -> str:
        """Stable text for the motion-clip cache key."""
        return (
            f"fps={self.fps:g};side={self.max_side};rel={int(self.relative_motion)};"
            f"expr={self.expression_multiplier:g};stitch={int(self.stitching)};"
            f"eye={int(self.eye_retargeting)};lip={int(self.lip_retargeting)}"
        )


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
    # checked above with the wire's own messages; built unvalidated for the fps-0 case
    return MotionOptions.model_construct(
        fps=msg.fps,
        max_side=msg.max_side or DEFAULTS.max_side,
        relative_motion=given("relative_motion"),
        expression_multiplier=expression,
        stitching=given("stitching"),
        eye_retargeting=msg.eye_retargeting,
        lip_retargeting=msg.lip_retargeting,
    )
