"""LivePortrait's appearance extractor F and SPADE generator G against the reference pack.

Each network loads the pack's deterministic weights under the official tensor names
(strict), runs the fixture input in eval mode and must reproduce the fixture output.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from talkinghead.services.common.deterministic_weights import deterministic_state_dict
from talkinghead.services.motion.networks.appearance_feature_extractor import (
    AppearanceFeatureExtractor,
    appearance_keys_from_official,
)
from talkinghead.services.motion.networks.blocks import SpectralNormConv2d
from talkinghead.services.motion.networks.spade_generator import (
    SPADEGenerator,
    spade_keys_from_official,
)
from tests.reference_pack import assert_close, fixture, manifest, relative_tolerance, salt_of

APPEARANCE = "liveportrait/appearance_feature_extractor"
SPADE = "liveportrait/spade_generator"
SPADE_ATOL = 5e-4  # the pack's absolute tolerance for G (values in 0..1)


def _names_and_shapes(module: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


def _loaded(module: nn.Module, pack: str, key_map, data: dict[str, np.ndarray]) -> nn.Module:
    state = key_map(deterministic_state_dict(manifest(f"{pack}.manifest.json"), salt_of(data)))
    module.load_state_dict(state, strict=True)
    return module.eval()


@pytest.mark.reference
def test_appearance_state_dict_matches_manifest_in_order():
    expected = [(n, s) for n, s, _ in manifest(f"{APPEARANCE}.manifest.json").tensors]
    assert _names_and_shapes(AppearanceFeatureExtractor()) == expected


@pytest.mark.reference
def test_spade_state_dict_matches_manifest_in_order():
    expected = [(n, s) for n, s, _ in manifest(f"{SPADE}.manifest.json").tensors]
    assert _names_and_shapes(SPADEGenerator()) == expected


@pytest.mark.reference
def test_appearance_matches_fixture():
    data = fixture(f"{APPEARANCE}.npz")
    net = _loaded(AppearanceFeatureExtractor(), APPEARANCE, appearance_keys_from_official, data)
    with torch.no_grad():
        out = net(torch.from_numpy(data["input"])).numpy()
    assert_close(out, data["output"], relative_tolerance(data["output"]), "appearance output")


@pytest.mark.reference
def test_spade_matches_fixture():
    data = fixture(f"{SPADE}.npz")
    net = _loaded(SPADEGenerator(), SPADE, spade_keys_from_official, data)
    with torch.no_grad():
        out = net(torch.from_numpy(data["feature"])).numpy()
    assert_close(out, data["output"], SPADE_ATOL, "spade output")


@pytest.mark.reference
def test_spade_eval_leaves_stored_power_iteration_vectors_alone():
    """Eval-mode inference must use u and v as stored (no power iteration, no renormalising)."""
    data = fixture(f"{SPADE}.npz")
    net = _loaded(SPADEGenerator(), SPADE, spade_keys_from_official, data)
    before = {k: v.clone() for k, v in net.state_dict().items() if k.endswith(("weight_u", "weight_v"))}
    with torch.no_grad():
        net(torch.from_numpy(data["feature"][:, :, :4, :4]))
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("training", [False, True])
def test_spectral_conv_equals_torch_spectral_norm(training: bool):
    """Our explicit spectral-norm conv computes what torch.nn.utils.spectral_norm computes,
    with non-unit stored u and v (as the deterministic weights have) in eval mode, and the
    same one-step power iteration in train mode."""
    g = torch.Generator().manual_seed(0)
    ours = SpectralNormConv2d(6, 5, 3, padding=2, dilation=2)
    theirs = nn.utils.spectral_norm(nn.Conv2d(6, 5, 3, padding=2, dilation=2))
    state = {
        "bias": 0.1 * torch.randn(5, generator=g),
        "weight_orig": torch.randn(5, 6, 3, 3, generator=g),
        "weight_u": 0.1 * torch.randn(5, generator=g),
        "weight_v": 0.1 * torch.randn(54, generator=g),
    }
    ours.load_state_dict(state, strict=True)
    theirs.load_state_dict(state, strict=True)
    ours.train(training)
    theirs.train(training)
    x = torch.randn(2, 6, 7, 7, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours.weight_u, theirs.weight_u, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours.weight_v, theirs.weight_v, rtol=1e-6, atol=1e-7)
