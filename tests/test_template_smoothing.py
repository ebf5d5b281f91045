"""`template extract --smooth`: the Kalman smoother lowers frame-to-frame jitter and keeps the
mean path, on a noisy synthetic track and on the pack's driving video d13."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from talkinghead.services.motion import liveportrait_weights as lp
from talkinghead.services.motion.template import load_template, rotation_to_euler_degrees
from talkinghead.services.motion.template_smoothing import (
    OBSERVATION_VARIANCE,
    jitter,
    kalman_smooth,
    smooth_template_arrays,
)
from tests.reference_pack import require


def rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    p, y, r = np.radians([pitch, yaw, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return (rz @ ry @ rx).T


def noisy_track(n: int = 200, seed: int = 0) -> tuple[dict, dict]:
    """A slow head movement (the truth) and the same with per-frame measurement noise."""
    rng = np.random.default_rng(seed)
    time = np.arange(n) / 25.0
    angles = np.stack([4 * np.sin(0.7 * time), 8 * np.sin(0.4 * time + 1), 2 * np.sin(time)], 1)
    exp = 0.02 * np.sin(time[:, None, None] * np.linspace(0.5, 2, 63).reshape(1, 21, 3))
    t = np.stack([0.02 * np.sin(0.5 * time), 0.01 * np.cos(0.3 * time), np.zeros(n)], 1)
    truth = {"R": np.stack([rotation(*a) for a in angles]), "exp": exp, "t": t,
             "scale": np.full((n, 1), 1.5), "fps": np.asarray(25.0)}
    noisy_angles = angles + rng.normal(0, 0.6, angles.shape)
    noisy = {"R": np.stack([rotation(*a) for a in noisy_angles]),
             "exp": exp + rng.normal(0, 0.004, exp.shape),
             "t": t + rng.normal(0, 0.002, t.shape),
             "scale": truth["scale"] + rng.normal(0, 0.003, (n, 1)), "fps": np.asarray(25.0)}
    return truth, noisy


def angles_of(R: np.ndarray) -> np.ndarray:
    return np.array([rotation_to_euler_degrees(r) for r in R])


@pytest.mark.parametrize("variance", [OBSERVATION_VARIANCE, 1e-4])
def test_less_jitter_on_a_noisy_track_same_mean_path(variance):
    truth, noisy = noisy_track()
    smoothed = smooth_template_arrays(noisy, variance)
    before, after = jitter(noisy), jitter(smoothed)
    assert after.angles_deg < before.angles_deg
    assert after.exp < before.exp and after.t < before.t
    # the same mean path: the average pose and expression stay where they were
    for key in ("exp", "t", "scale"):
        assert abs(smoothed[key].mean() - noisy[key].mean()) < 1e-3, key
    assert np.abs(angles_of(smoothed["R"]).mean(0) - angles_of(noisy["R"]).mean(0)).max() < 0.05
    # and closer to the truth than the noisy measurement
    err_noisy = np.abs(angles_of(noisy["R"]) - angles_of(truth["R"])).mean()
    err_smooth = np.abs(angles_of(smoothed["R"]) - angles_of(truth["R"])).mean()
    assert err_smooth < err_noisy
    # rotations stay rotations
    eye = np.einsum("nij,nkj->nik", smoothed["R"], smoothed["R"])
    np.testing.assert_allclose(eye, np.broadcast_to(np.eye(3), eye.shape), atol=1e-5)
    assert np.allclose(np.linalg.det(smoothed["R"]), 1.0, atol=1e-5)


def test_larger_observation_variance_smooths_more():
    _, noisy = noisy_track()
    light, strong = (jitter(smooth_template_arrays(noisy, v)).angles_deg for v in (3e-7, 1e-4))
    assert strong < light


def test_a_still_or_straight_track_is_kept():
    still = np.full((30, 4), 0.25)
    np.testing.assert_allclose(kalman_smooth(still), still, atol=1e-12)
    assert kalman_smooth(np.ones((1, 3))).shape == (1, 3)


def test_extract_with_smoothing_on_d13(tmp_path):
    video = require("liveportrait/templates/d13.mp4")
    weights = tmp_path / "weights"
    lp.write_deterministic_checkpoints(weights, "talkinghead-a")
    out = tmp_path / "d13s.npz"
    proc = subprocess.run(
        [sys.executable, "-m", "talkinghead.cli", "template", "extract", str(video), "-o",
         str(out), "--weights", str(weights), "--device", "cpu", "--max-frames", "24",
         "--smooth", "--smooth-variance", "1e-4"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Kalman smoothing (observation variance 0.0001)" in proc.stdout
    template = load_template(str(out))
    assert template.n_frames == 24
    line = proc.stdout.split("jitter", 1)[1]
    raw, smoothed = (float(v) for v in line.split("angles ")[1].split(" deg")[0].split(" -> "))
    assert smoothed < raw
