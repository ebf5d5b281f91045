"""Every grid handed to grid_sample is contiguous (MPS's native 3-D op is wrong for others,
pytorch issue 171602), checked on the CPU by watching the real calls of the warping network."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from talkinghead.services.common.grid_sampling import (
    check_mps_grid_sample,
    mps_has_native_grid_sample_3d,
    sample,
    version_tuple,
)
from talkinghead.services.motion.networks.warping_network import WarpingNetwork

REPO = Path(__file__).resolve().parents[1]


class GridWatch(TorchFunctionMode):
    """Records, for every grid_sample call, whether its grid was contiguous (the call runs)."""

    def __init__(self):
        super().__init__()
        self.grids: list[tuple[tuple[int, ...], bool]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.grid_sample:
            grid = args[1] if len(args) > 1 else kwargs["grid"]
            self.grids.append((tuple(grid.shape), grid.is_contiguous()))
        return func(*args, **kwargs)


def test_sample_makes_a_permuted_grid_contiguous():
    features = torch.randn(1, 2, 4, 6, 6)
    permuted = torch.rand(1, 3, 4, 6, 6).mul(2).sub(1).permute(0, 2, 3, 4, 1)
    assert not permuted.is_contiguous()
    with GridWatch() as watch:
        out = sample(features, permuted)
    assert watch.grids == [((1, 4, 6, 6, 3), True)]
    assert torch.equal(out, F.grid_sample(features, permuted.contiguous(), align_corners=False))


def test_the_warping_network_passes_only_contiguous_grids():
    torch.manual_seed(0)
    net = WarpingNetwork().eval()
    feature = torch.randn(1, 32, 16, 32, 32)  # the smallest volume its hourglass takes
    kp_source = torch.rand(1, 21, 3) * 1.6 - 0.8
    kp_driving = kp_source + 0.05 * torch.randn(1, 21, 3)
    with torch.inference_mode(), GridWatch() as watch:
        net(feature, kp_source, kp_driving)
    assert len(watch.grids) == 2  # dense motion's proposals, then the feature volume
    assert all(contiguous for _, contiguous in watch.grids), watch.grids


def test_no_network_calls_grid_sample_directly():
    """Every grid_sample of the services goes through grid_sampling.sample."""
    offenders = []
    for path in (REPO / "services").rglob("*.py"):
        if path.name == "grid_sampling.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "grid_sample":
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders


@pytest.mark.parametrize(("version", "native"), [("2.8.0", False), ("2.9.0", True),
                                                 ("2.13.0+cpu", True), ("3.0.0", True),
                                                 ("2.10.0a0+git123", True), ("1.13.1", False)])
def test_which_torch_has_the_native_mps_op(version, native):
    assert mps_has_native_grid_sample_3d(version) is native


def test_version_tuple_and_cpu_check():
    assert version_tuple("2.13.0+cpu") == (2, 13)
    check_mps_grid_sample("cpu")  # nothing to check off mps
