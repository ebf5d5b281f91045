"""LivePortrait's motion extractor M and stitching/retargeting MLPs against the reference pack.

Deterministic weights from the manifests (salt read from each fixture) go through the same
key mapping a real checkpoint does, load strict, and must reproduce every fixture output
within the pack's tolerance, 1e-4 · max(1, std(fixture)).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from talkinghead.services.common.deterministic_weights import deterministic_state_dict
from talkinghead.services.common.errors import WeightsError
from talkinghead.services.motion.networks.motion_extractor import (
    GRN,
    LayerNorm2d,
    MotionExtractor,
    motion_keys_from_official,
)
from talkinghead.services.motion.networks.stitching_retargeting import (
    build_mlps,
    load_stitching_retargeting,
    official_layout_from_prefixed,
)
from tests.reference_pack import assert_close, fixture, manifest, relative_tolerance, salt_of

pytestmark = pytest.mark.reference

M_MANIFEST = "liveportrait/motion_extractor.manifest.json"
M_FIXTURE = "liveportrait/motion_extractor.npz"
S_MANIFEST = "liveportrait/stitching_retargeting_module.manifest.json"
S_FIXTURE = "liveportrait/stitching_retargeting.npz"
HEADS = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")
ROLES = ("stitching", "lip", "eye")


def layout(state: dict[str, torch.Tensor]) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(t.shape)) for name, t in state.items()]


def motion_extractor(salt: str) -> MotionExtractor:
    state = deterministic_state_dict(manifest(M_MANIFEST), salt)
    net = MotionExtractor()
    net.load_state_dict(motion_keys_from_official(state), strict=True)
    return net.eval()


def run_mlps(mlps, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {role: mlp(torch.from_numpy(data[f"{role}_input"])).numpy()
                for role, mlp in zip(ROLES, mlps, strict=True)}


def official_checkpoint(salt: str) -> dict[str, dict[str, torch.Tensor]]:
    return official_layout_from_prefixed(deterministic_state_dict(manifest(S_MANIFEST), salt))


# ---- motion extractor M ----------------------------------------------------------------

def test_motion_extractor_state_dict_is_the_manifest():
    expected = [(name, shape) for name, shape, _dtype in manifest(M_MANIFEST).tensors]
    assert layout(MotionExtractor().state_dict()) == expected  # names, shapes and order


def test_motion_extractor_matches_fixture():
    data = fixture(M_FIXTURE)
    net = motion_extractor(salt_of(data))
    with torch.no_grad():
        heads = net(torch.from_numpy(data["input"]))
    assert set(vars(heads)) == set(HEADS)
    for name in HEADS:
        expected = data[f"output_{name}"]
        assert_close(getattr(heads, name).numpy(), expected, relative_tolerance(expected), f"output_{name}")


def test_motion_extractor_at_full_size_matches_frame_e2e():
    """The official 256×256 crop size: M(source) of the end-to-end frame."""
    data = fixture("liveportrait/frame_e2e.npz")
    with torch.no_grad():
        heads = motion_extractor(salt_of(data))(torch.from_numpy(data["source"]))
    for name in HEADS:
        expected = data[f"source_kp_info_{name}"]
        assert_close(getattr(heads, name).numpy(), expected, relative_tolerance(expected),
                     f"source_kp_info_{name}")


def test_motion_extractor_fixture_discriminates():
    """Another salt's weights land far outside the tolerance: the comparison has teeth."""
    data = fixture(M_FIXTURE)
    with torch.no_grad():
        heads = motion_extractor(salt_of(data) + "-other")(torch.from_numpy(data["input"]))
    err = np.abs(heads.kp.numpy() - data["output_kp"]).max()
    assert err > 100 * relative_tolerance(data["output_kp"])


def test_motion_extractor_epsilons_are_convnext_v2s():
    """Every LayerNorm and GRN uses eps 1e-6. Pinned here because the fixture barely can:
    LayerNorm eps 1e-5 (PyTorch's default) moves the heads by ~1e-4, right at the tolerance."""
    norms = [m for m in MotionExtractor().modules() if isinstance(m, (nn.LayerNorm, LayerNorm2d, GRN))]
    assert len(norms) == 4 + 18 + 1 + 18  # downsampling norms, block norms, final norm, GRNs
    assert all(m.eps == 1e-6 for m in norms)


# ---- stitching / retargeting MLPs ------------------------------------------------------

def test_stitching_retargeting_state_dicts_are_the_manifest():
    expected = [(name, shape) for name, shape, _dtype in manifest(S_MANIFEST).tensors]
    ours = []
    for role, mlp in zip(ROLES, build_mlps(), strict=True):
        ours += [(f"{role}.{name}", shape) for name, shape in layout(mlp.state_dict())]
    assert ours == expected


def test_official_layout_splits_by_role():
    """The manifest's wrapping: shoulder = stitching (in 126), mouth = lip (65), eye = eye (66)."""
    checkpoint = official_checkpoint("any")
    assert set(checkpoint) == {"retarget_shoulder", "retarget_mouth", "retarget_eye"}
    for key, width_in in (("retarget_shoulder", 126), ("retarget_mouth", 65), ("retarget_eye", 66)):
        assert checkpoint[key]["mlp.0.weight"].shape[1] == width_in, key
    assert set(checkpoint["retarget_shoulder"]) == set(build_mlps()[0].state_dict())
    with pytest.raises(ValueError):
        official_layout_from_prefixed({"shoulder.mlp.0.weight": torch.zeros(1)})


def test_stitching_retargeting_matches_fixture():
    data = fixture(S_FIXTURE)
    mlps = load_stitching_retargeting(official_checkpoint(salt_of(data)))
    assert not any(mlp.training for mlp in mlps)
    outputs = run_mlps(mlps, data)
    for role in ROLES:
        expected = data[f"{role}_output"]
        assert_close(outputs[role], expected, relative_tolerance(expected), f"{role}_output")


def test_module_prefixed_checkpoint_loads():
    """DataParallel-saved state_dicts ('module.mlp.0.weight') load to the same networks."""
    data = fixture(S_FIXTURE)
    plain = official_checkpoint(salt_of(data))
    prefixed = {key: {f"module.{k}": v for k, v in sd.items()} for key, sd in plain.items()}
    ours = run_mlps(load_stitching_retargeting(prefixed), data)
    reference = run_mlps(load_stitching_retargeting(plain), data)
    for role in ROLES:
        np.testing.assert_array_equal(ours[role], reference[role])


def test_broken_checkpoint_names_the_culprit():
    checkpoint = official_checkpoint("any")
    del checkpoint["retarget_eye"]
    with pytest.raises(WeightsError, match="retarget_eye"):
        load_stitching_retargeting(checkpoint, source="s.pth")
    checkpoint = official_checkpoint("any")
    checkpoint["retarget_mouth"]["mlp.0.weight"] = torch.zeros(128, 66)
    with pytest.raises(WeightsError, match=r"retarget_mouth.*mlp\.0\.weight"):
        load_stitching_retargeting(checkpoint, source="s.pth")
