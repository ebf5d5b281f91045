"""Loading official checkpoint files into our modules, with errors that name the culprit.

Files are read with ``torch.load(weights_only=True)``: a checkpoint is data, and a pickle
that tries to build arbitrary objects is refused. A file whose tensors do not match the
network raises WeightsError naming the file and the first tensor that differs, which the
servers report as FAILED_PRECONDITION.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from talkinghead.services.common.errors import WeightsError


def read_checkpoint(path: Path) -> dict:
    """The object stored in an official .pth file (a state_dict or a dict of them)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"missing weights file: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
        raise WeightsError(f"cannot read weights file {path}: {exc}") from exc


def first_mismatch(module: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """Describe the first tensor where ``state`` and ``module`` disagree, or None."""
    expected = module.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            return f"tensor {name!r} is missing (expected shape {tuple(tensor.shape)})"
        if tuple(state[name].shape) != tuple(tensor.shape):
            return (
                f"tensor {name!r} has shape {tuple(state[name].shape)}, "
                f"expected {tuple(tensor.shape)}"
            )
    for name in state:
        if name not in expected:
            return f"tensor {name!r} is not part of the network"
    return None


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """load_state_dict(strict=True), but failing with the file and first mismatching tensor."""
    problem = first_mismatch(module, state)
    if problem:
        raise WeightsError(f"{source}: {problem}")
    module.load_state_dict(state, strict=True)
    return module


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict:
    """Remove a DataParallel-style prefix where present (the official loaders do the same)."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def fill_batchnorm_counters(state: Mapping[str, torch.Tensor]) -> dict:
    """Add a zero ``num_batches_tracked`` beside every BatchNorm that lacks one, as PyTorch's
    BatchNorm loader does (the counter is unused in eval; some released files omit it), so
    that loading can stay strict."""
    out = dict(state)
    for key in state:
        if key.endswith(".running_var"):
            counter = key.removesuffix("running_var") + "num_batches_tracked"
            out.setdefault(counter, torch.tensor(0, dtype=torch.long))
    return out


def file_fingerprint(paths: list[Path]) -> str:
    """sha256 over the files' bytes: changes whenever any weight changes (cache key)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
