"""Every ``grid_sample`` of our networks, with a contiguous grid, and the MPS op check.

Apple GPUs: torch has a native 3-D (trilinear) ``grid_sample`` on MPS since 2.9 (pytorch PR
160541); before it the op is missing there and runs only with PYTORCH_ENABLE_MPS_FALLBACK=1
(on the CPU, a real cost: the warping network samples a 64^3 volume every frame). That native
op gives wrong results, silently, for a non-contiguous grid (pytorch issue 171602), and our
deformation grids come out of sums and permutes: so every grid goes through ``sample`` here,
made contiguous first (a no-op where it already is).
"""

from __future__ import annotations

import logging
import os
from importlib import metadata

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# The first torch release with grid_sampler_3d on MPS (PR 160541, merged August 2025).
MPS_NATIVE_GRID_SAMPLE_3D = (2, 9)
MPS_FALLBACK_ENV = "PYTORCH_ENABLE_MPS_FALLBACK"


def sample(features: torch.Tensor, grid: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """``F.grid_sample`` (bilinear / trilinear, zero padding) with the grid made contiguous."""
    return F.grid_sample(features, grid.contiguous(), align_corners=align_corners)


def version_tuple(version: str) -> tuple[int, int]:
    """'2.13.0+cpu' → (2, 13)."""
    major, minor = (version.split("+")[0].split(".") + ["0"])[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def mps_has_native_grid_sample_3d(torch_version: str | None = None) -> bool:
    """Whether the installed torch (or ``torch_version``) has the native 3-D op on MPS."""
    version = torch_version or metadata.version("torch")
    return version_tuple(version) >= MPS_NATIVE_GRID_SAMPLE_3D


def check_mps_grid_sample(device: str) -> None:
    """On mps: say which path the warping's 3-D grid_sample takes, and refuse to start where
    the op is missing and the CPU fallback is off (it would fail at the first frame)."""
    if torch.device(device).type != "mps":
        return
    if mps_has_native_grid_sample_3d(torch.__version__):
        log.info("mps: native 3-D grid_sample (torch %s); %s not needed", torch.__version__,
                 MPS_FALLBACK_ENV)
        return
    if os.environ.get(MPS_FALLBACK_ENV) == "1":
        log.warning("mps: torch %s has no 3-D grid_sample on MPS; it runs on the CPU "
                    "(%s=1). torch >= %d.%d runs it on the GPU", torch.__version__,
                    MPS_FALLBACK_ENV, *MPS_NATIVE_GRID_SAMPLE_3D)
        return
    raise RuntimeError(
        f"torch {torch.__version__} has no 3-D grid_sample on MPS: install torch >= "
        f"{MPS_NATIVE_GRID_SAMPLE_3D[0]}.{MPS_NATIVE_GRID_SAMPLE_3D[1]}, or set "
        f"{MPS_FALLBACK_ENV}=1 before starting (the op then runs on the CPU)")
