"""Shared helpers of the MuseTalk tests: the pack's folder, its sampled arrays, the extra."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.reference_pack import assert_close, relative_tolerance

PACK = "musetalk"
MISSING_EXTRA = [m for m in ("diffusers", "transformers", "safetensors")
                 if importlib.util.find_spec(m) is None]
requires_extra = pytest.mark.skipif(
    bool(MISSING_EXTRA),
    reason=f"MuseTalk needs the optional extra talkinghead[musetalk] "
           f"(not importable: {', '.join(MISSING_EXTRA)})")


def sampled(data: dict[str, np.ndarray], key: str) -> tuple[tuple[int, ...], np.ndarray]:
    """A large tensor the pack stores as shape + every 97th element: (shape, samples)."""
    return tuple(int(s) for s in data[f"{key}_shape"]), data[f"{key}_sample_every_97"]


def assert_sampled(ours, data: dict[str, np.ndarray], key: str, what: str = "") -> None:
    """Ours against a stored ``<key>_sample_every_97`` within the pack's float rule
    (1e-4 · max(1, std)), with the shape, mean and std checked too."""
    ours = np.asarray(ours, dtype=np.float64)
    shape, samples = sampled(data, key)
    assert ours.shape == shape, f"{what or key}: shape {ours.shape} != {shape}"
    std = float(data[f"{key}_std"])
    tol = 1e-4 * max(1.0, std)
    assert_close(ours.reshape(-1)[::97], samples, tol, what or key)
    assert abs(ours.mean() - float(data[f"{key}_mean"])) <= tol, f"{what or key}: mean"
    assert abs(ours.std() - std) <= tol, f"{what or key}: std"


def assert_float(ours, expected, what: str) -> None:
    assert_close(ours, expected, relative_tolerance(np.asarray(expected)), what)


def assert_uint8(ours: np.ndarray, expected: np.ndarray, what: str, levels: int = 1) -> None:
    """8-bit images: within ``levels`` grey levels everywhere."""
    ours, expected = np.asarray(ours), np.asarray(expected)
    assert ours.shape == expected.shape, f"{what}: shape {ours.shape} != {expected.shape}"
    diff = np.abs(ours.astype(np.int16) - expected.astype(np.int16))
    assert int(diff.max()) <= levels, (
        f"{what}: {int((diff > levels).sum())} values off by more than {levels} "
        f"(max {int(diff.max())})")
