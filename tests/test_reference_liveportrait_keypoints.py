"""LivePortrait's keypoint math against frame_e2e.npz (no networks needed for this part)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from talkinghead.services.motion.keypoints import (
    DrivingFrame,
    KeypointInfo,
    driving_keypoints,
    rotation_matrix,
)
from talkinghead.services.motion.networks.motion_extractor import MotionHeads
from tests.reference_pack import assert_close, fixture, liveportrait_template

pytestmark = pytest.mark.reference
ATOL = 1e-4


@pytest.fixture(scope="module")
def e2e():
    return fixture("liveportrait/frame_e2e.npz")


def source_info(e2e) -> KeypointInfo:
    heads = MotionHeads(**{k: torch.from_numpy(e2e[f"source_kp_info_{k}"])
                           for k in ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")})
    return KeypointInfo.from_heads(heads)


def test_pose_bins_rotation_and_source_keypoints(e2e):
    info = source_info(e2e)
    assert_close(info.pitch, e2e["pitch_deg"], ATOL, "pitch_deg")
    assert_close(info.yaw, e2e["yaw_deg"], ATOL, "yaw_deg")
    assert_close(info.roll, e2e["roll_deg"], ATOL, "roll_deg")
    assert_close(info.R, e2e["R_s"], ATOL, "R_s")
    assert_close(info.canonical, e2e["x_c_s"], ATOL, "x_c_s")
    assert_close(info.keypoints(), e2e["x_s"], ATOL, "x_s")


def test_relative_driving_keypoints_from_the_template(e2e):
    template = liveportrait_template(e2e)
    i = int(e2e["template_frame"])
    assert_close(template.R[0][None], e2e["R_d0"], 1e-6, "R_d0 is the named template's frame 0")
    assert_close(template.R[i][None], e2e["R_di"], 1e-6, "R_di is the named template's frame i")

    def frame(k: int) -> DrivingFrame:
        return DrivingFrame(
            R=torch.from_numpy(template.R[k][None]),
            exp=torch.from_numpy(template.exp[k][None]),
            scale=torch.from_numpy(template.scale[k][None]),
            t=torch.from_numpy(template.t[k][None]),
        )

    x_d, parts = driving_keypoints(source_info(e2e), frame(i), frame(0), relative=True)
    for name in ("R_new", "delta_new", "scale_new", "t_new"):
        assert_close(parts[name], e2e[name], ATOL, name)
    assert_close(x_d, e2e["x_d"], ATOL, "x_d")


def test_rotation_composition_order(e2e):
    """R_new = (R_di · R_d0ᵀ) · R_s, pinned on rotations made here: whether a fixture tells
    this order from R_s · (R_di · R_d0ᵀ) depends on its source pose and template frame (the
    two nearly commute when either rotation is small), so nothing is assumed of the pack."""
    def rotation(pitch: float, yaw: float, roll: float) -> torch.Tensor:
        return rotation_matrix(*(torch.tensor([a]) for a in (pitch, yaw, roll)))

    template = liveportrait_template(e2e)
    rest = {a: torch.from_numpy(getattr(template, a)[0][None]) for a in ("exp", "scale", "t")}
    first, frame = DrivingFrame(R=rotation(-2, 3, 1), **rest), DrivingFrame(R=rotation(4, 9, -3), **rest)
    tilted = dataclasses.replace(source_info(e2e), R=rotation(15, -25, 10))
    _, parts = driving_keypoints(tilted, frame, first, relative=True)
    change = frame.R @ first.R.transpose(1, 2)
    assert_close(parts["R_new"], change @ tilted.R, 1e-6, "R_new")
    # the other order is far off here, so the check above can fail
    assert np.abs((tilted.R @ change - change @ tilted.R).numpy()).max() > 1e-2
