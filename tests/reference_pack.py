"""Finding ../shared/reference: TH_REFERENCE_DIR, default the folder beside the repository.

Equivalence tests must never pass by not running: in CI a missing pack is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from talkinghead.services.common.deterministic_weights import Manifest
from talkinghead.services.motion.template import MotionTemplate, template_from_npz

REPO = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    return Path(os.environ.get("TH_REFERENCE_DIR", REPO.parent / "shared" / "reference"))


def require(relative: str) -> Path:
    """Path of a file in the pack; fails in CI (skips elsewhere) if it is missing."""
    path = reference_dir() / relative
    if not path.exists():
        message = f"reference pack file missing: {path} (set TH_REFERENCE_DIR)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def fixture(relative: str) -> dict[str, np.ndarray]:
    with np.load(require(relative), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def fixture_tags(relative: str, prefix: str, suffix: str, published: tuple[str, ...]) -> tuple[str, ...]:
    """The tags of a fixture's per-case arrays (``prefix + tag + suffix``), read from the
    pack at collection time, so that a pack with other pictures (other sizes) is tested on
    its own cases. ``published``: the published pack's tags, used only when the pack is
    absent (the tests then skip, or fail in CI, through ``require``)."""
    path = reference_dir() / relative
    if not path.exists():
        return published
    with np.load(path, allow_pickle=False) as data:
        names = data.files
    tags = tuple(n[len(prefix):len(n) - len(suffix)] for n in names
                 if n.startswith(prefix) and n.endswith(suffix) and len(n) > len(prefix) + len(suffix))
    return tags or published


def manifest(relative: str) -> Manifest:
    return Manifest.load(require(relative))


def liveportrait_template(data: dict[str, np.ndarray]) -> MotionTemplate:
    """The driving template a LivePortrait fixture names (its ``template``), read from the
    pack's own ``liveportrait/templates/``, never from the copy bundled with the package:
    another pack may name any of its templates."""
    name = str(data["template"])
    return template_from_npz(require(f"liveportrait/templates/{name}.npz"), name=name)


def salt_of(data: dict[str, np.ndarray]) -> str:
    return str(data["salt"])


def assert_close(ours: np.ndarray, expected: np.ndarray, atol: float, what: str) -> None:
    ours = np.asarray(ours, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert ours.shape == expected.shape, f"{what}: shape {ours.shape} != {expected.shape}"
    err = float(np.max(np.abs(ours - expected))) if ours.size else 0.0
    assert err <= atol, f"{what}: max |ours - fixture| = {err:.3g} > {atol:.3g}"


def relative_tolerance(expected: np.ndarray, factor: float = 1e-4) -> float:
    """The packs' rule: 1e-4 · max(1, std(fixture))."""
    return factor * max(1.0, float(np.std(expected)))
