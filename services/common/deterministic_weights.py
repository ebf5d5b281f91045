"""Deterministic weights: the procedure of ../shared/reference/README.md, for any checkpoint.

The official checkpoints cannot be downloaded everywhere, so equivalence is proved with
weights anyone can regenerate from a tensor's name, shape and a salt. The same weights give
honest speed figures (cost does not depend on weight values) and let us write complete
checkpoints in the official file layout for end-to-end runs without the real files.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Manifest:
    """Every tensor of one official checkpoint file, in its state_dict order."""

    checkpoint: str
    wrapping: str
    tensors: list[tuple[str, tuple[int, ...], str]]

    @classmethod
    def load(cls, path: Path) -> Manifest:
        raw = json.loads(Path(path).read_text())
        tensors = [(name, tuple(shape), dtype) for name, shape, dtype in raw["tensors"]]
        return cls(raw.get("checkpoint", ""), raw.get("wrapping", ""), tensors)


def deterministic_array(name: str, shape: tuple[int, ...], salt: str) -> np.ndarray:
    """The value the reference procedure gives tensor ``name`` of ``shape``."""
    rng = np.random.default_rng(zlib.crc32(f"{salt}:{name}".encode()))
    shape = tuple(int(s) for s in shape)
    if name.endswith("num_batches_tracked"):
        return np.zeros(shape, dtype=np.int64)
    if name.endswith("running_var"):
        value = 0.5 + rng.random(shape)
    elif name.endswith("running_mean"):
        value = 0.1 * rng.standard_normal(shape)
    elif len(shape) >= 2:
        value = rng.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))
    elif len(shape) == 1 and name.endswith("weight"):
        value = 1.0 + 0.1 * rng.standard_normal(shape)
    else:
        value = 0.1 * rng.standard_normal(shape)
    return value.astype(np.float32)


def deterministic_state_dict(manifest: Manifest, salt: str, prefix: str = "") -> dict:
    """torch tensors for every manifest entry (optionally only those under ``prefix``,
    with the prefix removed), in manifest order."""
    import torch

    state = {}
    for name, shape, _dtype in manifest.tensors:
        if prefix and not name.startswith(prefix):
            continue
        state[name[len(prefix):]] = torch.from_numpy(deterministic_array(name, shape, salt))
    return state


def deterministic_module_state(module, salt: str, prefix: str = "") -> dict:
    """Deterministic values for every tensor of ``module``'s own state_dict (names looked up
    as ``prefix + name``): our names are the official ones, so no manifest is needed."""
    import torch

    return {name: torch.from_numpy(deterministic_array(prefix + name, tuple(t.shape), salt))
            for name, t in module.state_dict().items()}
