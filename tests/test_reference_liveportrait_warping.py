"""The warping module W (with its dense motion network) against warping_module.npz."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.services.common.deterministic_weights import deterministic_state_dict
from talkinghead.services.motion.networks.warping_network import (
    WarpingNetwork,
    warping_keys_from_official,
)
from tests.reference_pack import assert_close, fixture, manifest, relative_tolerance, salt_of

pytestmark = pytest.mark.reference
OUTPUTS = ("occlusion_map", "deformation", "out")


@pytest.fixture(scope="module")
def data():
    return fixture("liveportrait/warping_module.npz")


@pytest.fixture(scope="module")
def official():
    return manifest("liveportrait/warping_module.manifest.json")


@pytest.fixture(scope="module")
def net(data, official):
    net = WarpingNetwork()
    state = warping_keys_from_official(deterministic_state_dict(official, salt_of(data)))
    net.load_state_dict(state, strict=True)
    return net.eval()


def run(net: WarpingNetwork, data, swap: bool = False):
    kp_source, kp_driving = torch.from_numpy(data["kp_source"]), torch.from_numpy(data["kp_driving"])
    if swap:
        kp_source, kp_driving = kp_driving, kp_source
    with torch.no_grad():
        return net(torch.from_numpy(data["feature_3d"]), kp_source, kp_driving)


def test_state_dict_names_and_shapes_are_the_official_ones(official):
    ours = [(name, tuple(t.shape)) for name, t in WarpingNetwork().state_dict().items()]
    assert ours == [(name, shape) for name, shape, _dtype in official.tensors]


def test_outputs_match_the_fixture(net, data):
    result = run(net, data)
    for name in OUTPUTS:
        expected = data[f"output_{name}"]
        assert_close(getattr(result, name).numpy(), expected, relative_tolerance(expected), name)


def test_keypoint_roles_matter(net, data):
    """Swapping source and driving is far outside tolerance, so the comparison above checks
    the argument order (ours: source, then driving; upstream's positional order differs)."""
    result = run(net, data, swap=True)
    expected = data["output_deformation"]
    err = np.abs(result.deformation.numpy() - expected).max()
    assert err > 100 * relative_tolerance(expected)
