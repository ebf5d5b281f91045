"""Smoother templates: a Kalman smoother over the motion a template records, and a jitter figure.

LivePortrait output jitters where the driving motion does. Upstream smooths driving motion
with a Kalman (Rauch-Tung-Striebel) smoother, but only when the *source* is a video
(``driving_smooth_observation_variance``, 3e-7); it does not smooth templates. We offer the
same smoother as an option of ``talkinghead template extract``: our choice, not upstream's
template behaviour.

The model is upstream's: every value (each entry of R, exp, t and scale) a random walk
observed with noise, identity transition and observation, process variance 1e-5, observation
variance ``observation_variance`` (larger: smoother), the first frame as the initial mean,
initial variance 1. All variances being the same multiple of the identity, the gains are the
same scalars for every value, so the filter runs once on scalars and applies to all columns.
Smoothed rotations are projected back onto rotations (SVD), which upstream leaves as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OBSERVATION_VARIANCE = 3e-7  # upstream's driving_smooth_observation_variance
PROCESS_VARIANCE = 1e-5
SMOOTHED_ARRAYS = ("R", "exp", "t", "scale")


def kalman_smooth(values: np.ndarray, observation_variance: float = OBSERVATION_VARIANCE,
                  process_variance: float = PROCESS_VARIANCE) -> np.ndarray:
    """RTS-smoothed [N, ...] series (each element its own random walk, same variances)."""
    x = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    n = len(x)
    if n < 2:
        return np.asarray(values, dtype=np.float64).copy()
    filtered = np.empty_like(x)
    variance = np.empty(n)  # filtered variance per frame (the same for every column)
    mean, var = x[0].copy(), 1.0  # initial state: first frame, variance 1
    for i in range(n):
        if i > 0:
            var = var + process_variance  # predict: the mean carries over
        gain = var / (var + observation_variance)
        mean = mean + gain * (x[i] - mean)
        var = (1.0 - gain) * var
        filtered[i], variance[i] = mean, var
    smoothed = filtered.copy()
    smoothed_var = variance[-1]
    for i in range(n - 2, -1, -1):
        predicted = variance[i] + process_variance
        back = variance[i] / predicted
        smoothed[i] = filtered[i] + back * (smoothed[i + 1] - filtered[i])
        smoothed_var = variance[i] + back * back * (smoothed_var - predicted)
    return smoothed.reshape(np.shape(values))


def nearest_rotations(R: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(np.asarray(R, dtype=np.float64))
    fix = np.linalg.det(u @ vt)  # a reflection would flip one axis: keep proper rotations
    u[..., :, -1] *= fix[..., None]
    return u @ vt


def smooth_template_arrays(arrays: dict[str, np.ndarray],
                           observation_variance: float = OBSERVATION_VARIANCE) -> dict[str, np.ndarray]:
    """The template's arrays with R, exp, t and scale smoothed (other arrays unchanged)."""
    out = dict(arrays)
    for key in SMOOTHED_ARRAYS:
        if key in arrays:
            out[key] = kalman_smooth(arrays[key], observation_variance)
    if "R" in out:
        out["R"] = nearest_rotations(out["R"])
    for key in SMOOTHED_ARRAYS:
        if key in out:
            out[key] = out[key].astype(np.float32)
    return out


@dataclass(frozen=True)
class Jitter:
    """Frame-to-frame jitter: the RMS of the second difference (what a smooth path lacks)."""

    angles_deg: float  # pitch, yaw, roll
    exp: float  # expression offsets, keypoint units
    t: float  # translation, keypoint units

    def as_dict(self) -> dict[str, float]:
        return {"angles_deg": self.angles_deg, "exp": self.exp, "t": self.t}


def _rms_second_difference(series: np.ndarray) -> float:
    series = np.asarray(series, dtype=np.float64).reshape(len(series), -1)
    if len(series) < 3:
        return 0.0
    return float(np.sqrt(np.mean(np.diff(series, n=2, axis=0) ** 2)))


def jitter(arrays: dict[str, np.ndarray]) -> Jitter:
    from talkinghead.services.motion.template import rotation_to_euler_degrees

    angles = np.array([rotation_to_euler_degrees(R) for R in arrays["R"]])
    return Jitter(_rms_second_difference(angles), _rms_second_difference(arrays["exp"]),
                  _rms_second_difference(arrays["t"]))
