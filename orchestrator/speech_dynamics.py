"""``expression_multiplier: "auto"``: how much the face moves, from how lively the speech is.

A lively speaker's voice rises and falls in pitch and in loudness; a flat one's barely does.
We measure both over the voiced part of the speech (16 kHz mono, as the job decoded it):

- frames of 40 ms every 10 ms; a frame is *voiced* when its level is within 35 dB of the
  speech's loud frames (95th percentile) and it is periodic: its normalised autocorrelation
  peaks at >= 0.5 for a lag of 60..400 Hz;
- **pitch range**: the spread (90th minus 10th percentile) of the voiced frames' F0, in
  semitones (monotone speech: about 1; lively: 6 and more);
- **loudness spread**: the spread (90th minus 10th percentile) of their level, in dB (a
  global gain does not change it).

Each is mapped linearly to 0..1 between a flat and a lively reference (``PITCH_FLAT`` ..
``PITCH_LIVELY`` semitones, ``LOUDNESS_FLAT`` .. ``LOUDNESS_LIVELY`` dB) and clipped; the
liveliness is their mean, and the multiplier ``LOW + liveliness · (HIGH − LOW)``, quantised
to ``STEP`` so that speeches of a presenter at the same step share one cached motion clip.
Speech with too few voiced frames to measure gets the neutral 1.0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SAMPLE_RATE = 16_000
FRAME_S, HOP_S = 0.040, 0.010
F0_MIN, F0_MAX = 60.0, 400.0
PERIODICITY = 0.5  # normalised autocorrelation peak of a voiced frame
VOICED_WITHIN_DB = 35.0
MIN_VOICED_FRAMES = 20  # 0.2 s of voiced speech

PITCH_FLAT, PITCH_LIVELY = 1.0, 7.0  # semitones
LOUDNESS_FLAT, LOUDNESS_LIVELY = 6.0, 18.0  # dB
LOW, HIGH, STEP = 0.6, 1.4, 0.1  # the multiplier's bounds and step
NEUTRAL = 1.0


@dataclass(frozen=True)
class SpeechDynamics:
    """The measure and the multiplier it gives (logged, and in the task result)."""

    pitch_range_st: float
    loudness_spread_db: float
    voiced_s: float
    liveliness: float
    multiplier: float

    def to_dict(self) -> dict:
        return {k: round(v, 3) for k, v in asdict(self).items()}


def quantise(value: float, step: float = STEP) -> float:
    """To the nearest multiple of ``step`` (halves up), as a clean decimal."""
    return round(float(np.floor(value / step + 0.5)) * step, 6)


def _frames(audio: np.ndarray) -> np.ndarray:
    size, hop = int(FRAME_S * SAMPLE_RATE), int(HOP_S * SAMPLE_RATE)
    if len(audio) < size:
        return np.zeros((0, size), np.float32)
    count = 1 + (len(audio) - size) // hop
    index = np.arange(size)[None, :] + hop * np.arange(count)[:, None]
    return audio[index]


def measure(audio: np.ndarray) -> SpeechDynamics:
    """The speech's pitch range and loudness spread over its voiced frames, and the
    expression multiplier they map to."""
    frames = _frames(np.asarray(audio, dtype=np.float32))
    level_db = 10.0 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    if len(frames) == 0:
        return SpeechDynamics(0.0, 0.0, 0.0, 0.5, NEUTRAL)
    loud = np.percentile(level_db, 95)
    centred = frames - frames.mean(axis=1, keepdims=True)
    n_fft = 1 << int(np.ceil(np.log2(2 * frames.shape[1])))
    spectrum = np.fft.rfft(centred, n_fft, axis=1)
    autocorr = np.fft.irfft(np.abs(spectrum) ** 2, n_fft, axis=1)[:, : frames.shape[1]]
    lo, hi = int(SAMPLE_RATE / F0_MAX), int(SAMPLE_RATE / F0_MIN)
    lag = lo + np.argmax(autocorr[:, lo:hi], axis=1)
    peak = autocorr[np.arange(len(lag)), lag] / np.maximum(autocorr[:, 0], 1e-12)
    voiced = (level_db >= loud - VOICED_WITHIN_DB) & (peak >= PERIODICITY)
    if voiced.sum() < MIN_VOICED_FRAMES:
        return SpeechDynamics(0.0, 0.0, float(voiced.sum() * HOP_S), 0.5, NEUTRAL)
    semitones = 12.0 * np.log2(SAMPLE_RATE / lag[voiced])
    pitch_range = float(np.percentile(semitones, 90) - np.percentile(semitones, 10))
    loudness = float(np.percentile(level_db[voiced], 90) - np.percentile(level_db[voiced], 10))
    pitch_part = np.clip((pitch_range - PITCH_FLAT) / (PITCH_LIVELY - PITCH_FLAT), 0.0, 1.0)
    loud_part = np.clip((loudness - LOUDNESS_FLAT) / (LOUDNESS_LIVELY - LOUDNESS_FLAT), 0.0, 1.0)
    liveliness = float((pitch_part + loud_part) / 2.0)
    return SpeechDynamics(pitch_range, loudness, float(voiced.sum() * HOP_S), liveliness,
                          quantise(LOW + liveliness * (HIGH - LOW)))
