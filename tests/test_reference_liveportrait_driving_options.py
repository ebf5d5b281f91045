"""Every driving option against driving_options.npz: the keypoints handed to the warping network.

Upstream's whole pipeline recorded them for an image source under every combination of
driving option, animation region, driving multiplier and lip normalisation, for templates of
the pack. Here the same source goes through our motion extractor (the pack's deterministic
weights, salt from the fixture) and our driving code (driving.py: prepare_source, then
drive_batch, as the engine runs them), with templates read from the pack's own templates/.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.services.common.checkpoints import load_strict
from talkinghead.services.common.deterministic_weights import deterministic_state_dict
from talkinghead.services.motion.driving import (
    LIP_NORMALIZE_THRESHOLD,
    DrivingSettings,
    drive_batch,
    prepare_source,
)
from talkinghead.services.motion.keypoints import DrivingFrame, KeypointInfo, lip_open_ratio
from talkinghead.services.motion.networks.motion_extractor import MotionExtractor
from talkinghead.services.motion.networks.stitching_retargeting import build_mlps
from talkinghead.services.motion.template import template_from_npz
from tests.reference_pack import assert_close, fixture, manifest, reference_dir, require, salt_of

pytestmark = pytest.mark.reference

FIXTURE = "liveportrait/driving_options.npz"
TOLERANCE = 1e-4  # the pack's README: <= 1e-4 per keypoint


def variant_names() -> list[str]:
    """The variants the pack holds (read at collection time, so another pack with other
    templates is tested on its own); a placeholder when the pack is absent (then skipped)."""
    path = reference_dir() / FIXTURE
    if not path.exists():
        return ["talking|pose-friendly|all|normlip=0|mult=1"]
    with np.load(path, allow_pickle=False) as data:
        return [str(v) for v in data["variants"]]


def parse(name: str) -> tuple[str, DrivingSettings]:
    template, option, region, normlip, mult = name.split("|")
    return template, DrivingSettings(
        region=region, option=option, multiplier=float(mult.removeprefix("mult=")),
        normalize_lip=normlip == "normlip=1", relative=True)


def deterministic(module: torch.nn.Module, name: str, salt: str, prefix: str = ""):
    state = deterministic_state_dict(manifest(f"liveportrait/{name}.manifest.json"), salt, prefix)
    return load_strict(module, state, name).eval()


def load_pack() -> dict:
    """The fixture, our motion extractor's view of its source, and the stitching and lip MLPs."""
    data = fixture(FIXTURE)
    salt = salt_of(data)
    motion = deterministic(MotionExtractor(), "motion_extractor", salt)
    stitching_mlp, lip_mlp, _ = build_mlps()
    stitching_mlp = deterministic(stitching_mlp, "stitching_retargeting_module", salt, "stitching.")
    lip_mlp = deterministic(lip_mlp, "stitching_retargeting_module", salt, "lip.")
    source = torch.from_numpy(data["source_rgb"]).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        info = KeypointInfo.from_heads(motion(source))
    return {"data": data, "info": info, "stitching": stitching_mlp, "lip": lip_mlp,
            "templates": {}}


@pytest.fixture(scope="module")
def pack():
    return load_pack()


def template_of(pack: dict, name: str):
    if name not in pack["templates"]:
        pack["templates"][name] = template_from_npz(require(f"liveportrait/templates/{name}.npz"),
                                                    name=name)
    return pack["templates"][name]


def frames_of(template, index) -> DrivingFrame:
    return DrivingFrame(*(torch.from_numpy(np.ascontiguousarray(getattr(template, a)[index]))
                          for a in ("R", "exp", "scale", "t")))


def test_source_keypoints(pack):
    assert_close(pack["info"].keypoints().numpy(), pack["data"]["x_s"], TOLERANCE, "x_s")


def test_lip_threshold_is_upstreams(pack):
    assert float(pack["data"]["lip_normalize_threshold"]) == LIP_NORMALIZE_THRESHOLD


@pytest.mark.parametrize("variant", variant_names())
def test_driving_option_variant(pack, variant):
    data = pack["data"]
    template_name, settings = parse(variant)
    template = template_of(pack, template_name)
    index = data[f"{variant}|frames"]
    lip_ratio = float(lip_open_ratio(data["source_landmarks_203"])[0])
    with torch.inference_mode():
        source = prepare_source(pack["info"], frames_of(template, slice(0, 1)), settings,
                                lip_ratio=lip_ratio, lip_mlp=pack["lip"])
        x_d = drive_batch(source, frames_of(template, index), frames_of(template, slice(0, 1)),
                          settings, stitching=pack["stitching"])
    assert_close(x_d.numpy(), data[f"{variant}|x_d"], TOLERANCE, variant)
    if settings.normalize_lip:
        # the fixture's source has an open enough mouth: normalisation must have acted
        assert (source.lip_delta is not None) == (lip_ratio >= LIP_NORMALIZE_THRESHOLD)


def test_expression_friendly_is_pose_friendly_for_a_photo(pack):
    """With an image source and relative motion upstream's automatic m is 1 (float noise)."""
    template = template_of(pack, parse(variant_names()[0])[0])
    settings = DrivingSettings(option="expression-friendly")
    with torch.inference_mode():
        source = prepare_source(pack["info"], frames_of(template, slice(0, 1)), settings)
    assert abs(source.motion_multiplier - 1.0) < 1e-5


def test_the_options_change_the_keypoints(pack):
    """The regions, the multiplier and lip normalisation each move x_d by far more than the
    tolerance: a test that ignored an option would fail."""
    data = pack["data"]
    by_name = {v: data[f"{v}|x_d"] for v in variant_names()}
    base = next(v for v in by_name if "|pose-friendly|all|normlip=0|mult=1" in v
                and v.endswith("mult=1"))
    prefix = base.split("|")[0]
    for other in ("pose", "exp", "lip", "eyes"):
        v = base.replace("|all|", f"|{other}|")
        if v in by_name:
            assert np.abs(by_name[v] - by_name[base]).max() > 100 * TOLERANCE, v
    for v in (f"{prefix}|pose-friendly|all|normlip=1|mult=1",
              f"{prefix}|pose-friendly|all|normlip=0|mult=1.3"):
        if v in by_name:
            assert np.abs(by_name[v] - by_name[base]).max() > 100 * TOLERANCE, v
