"""The motion stage's options as command-line flags, for ``render``, ``submit`` and
``call motion``: one flag per ``MotionOptions`` field, named after it, with its default."""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from talkinghead.services.common import option_ranges as ranges
from talkinghead.services.common.errors import InputError
from talkinghead.services.motion.driving import ANIMATION_REGIONS, DRIVING_OPTIONS
from talkinghead.services.motion.options import DEFAULTS, MotionOptions


def multiplier_or_auto(text: str) -> float | str:
    """``--expression-multiplier``: a number, or ``auto`` (set from the speech, jobs only)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def add_motion_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fps", type=float, default=DEFAULTS.fps,
                        help=f"frame rate of the motion clip and the video, "
                             f"{ranges.MOTION_FPS.text()} (default %(default)g)")
    parser.add_argument("--max-side", type=int, default=DEFAULTS.max_side,
                        help=f"longest side of the animated frames, "
                             f"{ranges.MOTION_MAX_SIDE.text()}; the photo is scaled down, never "
                             f"up (default %(default)d)")
    parser.add_argument("--expression-multiplier", type=multiplier_or_auto,
                        default=DEFAULTS.expression_multiplier,
                        help=f"scales the template's expressions, "
                             f"{ranges.MOTION_EXPRESSION_MULTIPLIER.text()}, or 'auto' (render, "
                             f"submit, demo: set from the speech's liveliness) "
                             f"(default %(default)s)")
    parser.add_argument("--no-relative-motion", dest="relative_motion", action="store_false",
                        help="the template's absolute head pose, not its motion relative to "
                             "its first frame")
    parser.add_argument("--no-stitching", dest="stitching", action="store_false",
                        help="(LivePortrait) leave out stitching, which pastes the animated "
                             "face back without a seam")
    parser.add_argument("--eye-retargeting", action="store_true",
                        help="(LivePortrait) eye openness from the template")
    parser.add_argument("--lip-retargeting", action="store_true",
                        help="(LivePortrait) lip openness from the template")
    parser.add_argument("--animation-region", choices=ANIMATION_REGIONS,
                        default=DEFAULTS.animation_region,
                        help="which parts of the template's motion reach the photo "
                             "(default %(default)s: head pose and eyes, the mouth left to "
                             "lipsync; 'all' is upstream LivePortrait's command line)")
    parser.add_argument("--driving-option", choices=DRIVING_OPTIONS,
                        default=DEFAULTS.driving_option,
                        help="(LivePortrait) default %(default)s; for a photo with relative "
                             "motion both animate alike")
    parser.add_argument("--driving-multiplier", type=float, default=DEFAULTS.driving_multiplier,
                        help=f"scales the whole driving motion, "
                             f"{ranges.MOTION_DRIVING_MULTIPLIER.text()} (default %(default)g)")
    parser.add_argument("--normalize-lip", action="store_true",
                        help="(LivePortrait) close the photo's mouth before animation (needs "
                             "the landmark models; the result says when it was not applied)")


def motion_values(args: argparse.Namespace) -> dict:
    """The flags' values by field name (a job spec's options take them as they are)."""
    return {name: getattr(args, name) for name in MotionOptions.model_fields}


def motion_options(args: argparse.Namespace) -> MotionOptions:
    """The flags as MotionOptions; InputError naming the flag for a value out of range."""
    if args.expression_multiplier == "auto":
        raise InputError("--expression-multiplier auto is set from the speech: it works with "
                         "render, submit and demo; give a number here")
    try:
        return MotionOptions(**motion_values(args))
    except ValidationError as exc:
        raise InputError("; ".join(
            f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}" for err in exc.errors()
        )) from None
