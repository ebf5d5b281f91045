"""Motion options are defined once (MotionOptions): the job spec extends them, one function
maps them to the wire and one back, and the proto names every flag positively."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from talkinghead.orchestrator.jobspec import RenderOptions
from talkinghead.services.common.errors import InputError
from talkinghead.services.motion.options import (
    MotionOptions,
    options_from_proto,
    options_to_proto,
)
from talkinghead.v1 import motion_pb2

CHANGED = MotionOptions(fps=30.0, max_side=512, relative_motion=False,
                        expression_multiplier=1.5, stitching=False, eye_retargeting=True,
                        lip_retargeting=True, animation_region="lip",
                        driving_option="pose-friendly", driving_multiplier=1.25,
                        normalize_lip=True)


def test_every_field_survives_the_wire():
    assert options_from_proto(options_to_proto(CHANGED)) == CHANGED
    assert options_from_proto(options_to_proto(MotionOptions())) == MotionOptions()


def test_unset_fields_mean_the_documented_defaults():
    unset = options_from_proto(motion_pb2.MotionOptions())
    # fps 0 stays: the template's own rate, set by the server once the template is loaded
    assert unset == MotionOptions().model_copy(update={"fps": 0.0})
    assert unset.relative_motion and unset.stitching and unset.expression_multiplier == 1.0


def test_the_proto_names_no_flag_negatively():
    fields = motion_pb2.MotionOptions.DESCRIPTOR.fields_by_name
    assert set(fields) == set(MotionOptions.model_fields)
    for name in ("relative_motion", "stitching", "expression_multiplier"):
        assert fields[name].has_presence, name  # unset is told apart from false / 0


def test_out_of_range_on_the_wire_names_the_field():
    with pytest.raises(InputError, match=r"options.max_side must be within 128..4096"):
        options_from_proto(motion_pb2.MotionOptions(max_side=64))


def test_job_options_are_the_motion_options_plus_the_rest():
    job = RenderOptions(max_side=512, stitching=False, restore=False)
    assert isinstance(job, MotionOptions)
    assert job.motion == MotionOptions(max_side=512, stitching=False)
    assert type(job.motion) is MotionOptions
    with pytest.raises(ValidationError, match="max_side"):
        RenderOptions(max_side=64)
    with pytest.raises(ValidationError, match="bogus"):
        RenderOptions(bogus=1)


LEGACY = {"animation_region": "all", "driving_option": "pose-friendly"}


def test_cache_key_text_is_stable():
    """The motion-clip cache key hashes this text: a change would orphan every cached clip.
    The motion rendered before the driving options existed (region all, pose-friendly)
    keeps its old text; the driving options join it only where they differ."""
    assert MotionOptions(**LEGACY).cache_key() == (
        "fps=25;side=1024;rel=1;expr=1;stitch=1;eye=0;lip=0")
    assert MotionOptions().cache_key() == (
        "fps=25;side=1024;rel=1;expr=1;stitch=1;eye=0;lip=0;"
        "region=pose+eyes;drive=expression-friendly;dmult=1;normlip=0")
    assert RenderOptions(restore=False).motion.cache_key() == MotionOptions().cache_key()


@pytest.mark.parametrize("change", [{"animation_region": "pose"}, {"animation_region": "all"},
                                    {"driving_option": "pose-friendly"},
                                    {"driving_multiplier": 1.3}, {"normalize_lip": True}])
def test_every_driving_option_is_in_the_cache_key(change):
    assert MotionOptions(**change).cache_key() != MotionOptions().cache_key()


def test_driving_options_on_the_wire():
    unset = options_from_proto(motion_pb2.MotionOptions())
    assert (unset.animation_region, unset.driving_option, unset.driving_multiplier,
            unset.normalize_lip) == ("pose+eyes", "expression-friendly", 1.0, False)
    with pytest.raises(InputError, match=r"options.animation_region must be one of all, pose"):
        options_from_proto(motion_pb2.MotionOptions(animation_region="mouth"))
    with pytest.raises(InputError, match=r"options.driving_option must be one of"):
        options_from_proto(motion_pb2.MotionOptions(driving_option="friendly"))
    with pytest.raises(InputError, match=r"options.driving_multiplier must be within 0..3"):
        options_from_proto(motion_pb2.MotionOptions(driving_multiplier=3.5))
    with pytest.raises(ValidationError, match="animation_region"):
        MotionOptions(animation_region="mouth")


def test_render_and_call_flags_reach_the_options(demo_face, demo_card, tmp_path):
    """Every driving option is a flag of render/submit/demo and of call motion; "auto" is a
    job's expression multiplier only."""
    import json

    from talkinghead.cli import build_parser, spec_from_args
    from talkinghead.motion_flags import motion_options

    card = tmp_path / "card.json"
    card.write_text(json.dumps(demo_card))
    flags = ["--animation-region", "all", "--driving-option", "pose-friendly",
             "--driving-multiplier", "1.25", "--normalize-lip", "--expression-multiplier", "auto"]
    args = build_parser().parse_args(["render", "--face", str(demo_face), "--audio", "a.wav",
                                      "--card", str(card), "--out", str(tmp_path / "o.mp4"),
                                      *flags])
    options = spec_from_args(args).options
    assert (options.animation_region, options.driving_option, options.driving_multiplier,
            options.normalize_lip, options.expression_multiplier) == (
        "all", "pose-friendly", 1.25, True, "auto")
    call = build_parser().parse_args(["call", "motion", "--face", str(demo_face), "--out", "x.mp4",
                                      *flags[:-2]])
    assert motion_options(call) == MotionOptions(animation_region="all",
                                                 driving_option="pose-friendly",
                                                 driving_multiplier=1.25, normalize_lip=True)
    auto = build_parser().parse_args(["call", "motion", "--face", str(demo_face), "--out", "x.mp4",
                                      "--expression-multiplier", "auto"])
    with pytest.raises(InputError, match="set from the speech"):
        motion_options(auto)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["call", "motion", "--face", "f", "--out", "x.mp4",
                                   "--animation-region", "mouth"])
