"""Wav2Lip's audio front end (Prajwal et al., ACM MM 2020, "A Lip Sync Expert Is All You Need
for Speech to Lip Generation In The Wild"), in NumPy.

The generator was trained on these exact features, so they must match the official
``audio.py`` + ``hparams.py`` (librosa 0.7) closely: pre-emphasis 0.97, centred STFT (reflect
padding, periodic Hann 800, hop 200 = 80 columns per second at 16 kHz), magnitude, Slaney mel
filterbank (80 bands, 55–7600 Hz, area-normalised; Slaney's Auditory Toolbox scale, linear below
1 kHz and logarithmic above), dB with a 1e-5 floor and a 20 dB reference, then a symmetric
normalisation to ±4 with clipping. There is no loudness normalisation: the features depend on
the absolute level of the waveform.

Precision follows the reference: pre-emphasis and the FFT in float64, the STFT kept as
complex64 (as librosa stores it), the mel projection and the dB/normalisation in float32
(with the log10 itself taken in float64, see ``amplitude_to_normalized_db``).
Then each video frame gets a 16-column window of the mel (``mel_windows``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from talkinghead.services.common.audio import decode_audio_file
from talkinghead.services.common.errors import InputError
from talkinghead.services.common.resample import (  # noqa: F401 - re-exported
    KAISER_BEST,
    KAISER_BEST_LEGACY,
    SincFilter,
    resample_sinc,
    sinc_table,
)


@dataclass(frozen=True)
class MelConfig:
    """``hparams.py`` of Wav2Lip (the values the checkpoints were trained with)."""

    sample_rate: int = 16_000
    n_fft: int = 800
    hop_size: int = 200
    win_size: int = 800
    num_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    preemphasis: float = 0.97
    min_level_db: float = -100.0
    ref_level_db: float = 20.0
    max_abs_value: float = 4.0


MEL = MelConfig()
MEL_STEP_SIZE = 16  # columns per video-frame window (0.2 s)
MEL_COLUMNS_PER_SECOND = 80.0  # sample_rate / hop_size; the official code hard-codes 80.


# ---- Slaney mel scale (Auditory Toolbox): linear to 1 kHz, logarithmic above ----------------

_F_SP = 200.0 / 3  # Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15 mel
_LOG_STEP = np.log(6.4) / 27.0  # 27 log-spaced mels per factor 6.4


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = _F_SP * mel
    log = _MIN_LOG_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, linear)


@functools.cache
def mel_basis(config: MelConfig = MEL) -> np.ndarray:
    """[num_mels, 1 + n_fft // 2] float32 triangular filters, Slaney area normalisation.

    Band edges are equally spaced in mel between fmin and fmax; each triangle rises from its
    lower to its centre edge and falls to its upper edge, then is scaled by 2 / (upper − lower)
    Hz so every filter has the same area. Read-only and cached: built once per config.
    """
    if config.fmax > config.sample_rate / 2:
        raise ValueError("fmax must not exceed the Nyquist frequency")
    fft_hz = np.linspace(0.0, config.sample_rate / 2, 1 + config.n_fft // 2)
    edges = mel_to_hz(np.linspace(hz_to_mel(config.fmin), hz_to_mel(config.fmax), config.num_mels + 2))
    widths = np.diff(edges)
    offsets = edges[:, None] - fft_hz[None, :]  # [num_mels + 2, bins]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    # float32 triangles, then the float64 area factor, rounded back to float32 (librosa 0.7 order).
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    weights = (weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)
    weights.setflags(write=False)
    return weights


# ---- the spectrogram ----------------------------------------------------------------------

def preemphasis(wav: np.ndarray, k: float = MEL.preemphasis) -> np.ndarray:
    """y[n] = x[n] − k·x[n−1] in float64, zero initial state: boosts the highs speech loses."""
    x = np.asarray(wav, dtype=np.float64)
    y = x.copy()
    y[1:] -= k * x[:-1]
    return y


def periodic_hann(n: int) -> np.ndarray:
    """Hann window of period n (the FFT-friendly one, not symmetric): the first n points of a
    symmetric n + 1 window, written as scipy.signal.get_window builds it (same rounding)."""
    return 0.5 + 0.5 * np.cos(np.linspace(-np.pi, np.pi, n + 1)[:-1])


def stft_magnitude(y: np.ndarray, config: MelConfig = MEL) -> np.ndarray:
    """|STFT| [1 + n_fft // 2, 1 + len // hop] float32: centred frames (reflect padding of
    n_fft / 2), periodic Hann, FFT in float64, stored as complex64 before the magnitude."""
    y = np.asarray(y, dtype=np.float64)
    pad = config.n_fft // 2
    if len(y) <= pad:
        raise InputError(f"audio of {len(y)} samples is too short for the STFT (needs > {pad})")
    padded = np.pad(y, pad, mode="reflect")
    window = np.zeros(config.n_fft)
    start = (config.n_fft - config.win_size) // 2  # window centred inside n_fft
    window[start:start + config.win_size] = periodic_hann(config.win_size)
    n_frames = 1 + (len(padded) - config.n_fft) // config.hop_size
    frames = np.lib.stride_tricks.sliding_window_view(padded, config.n_fft)[:: config.hop_size][:n_frames]
    spectrum = np.fft.rfft(frames * window, axis=1).astype(np.complex64)  # [frames, bins]
    return np.abs(spectrum).T.copy()


def amplitude_to_normalized_db(mel_amplitude: np.ndarray, config: MelConfig = MEL) -> np.ndarray:
    """20·log10(max(1e-5, m)) − ref, then (S − min)/(−min) mapped to ±max_abs and clipped,
    all in float32. Digital silence lands exactly on −max_abs."""
    m = np.asarray(mel_amplitude, dtype=np.float32)
    floor = np.float32(np.exp(config.min_level_db / 20 * np.log(10)))
    # log10 in float64, rounded once: NumPy's float32 log10 differs by an ulp between CPUs
    # (AVX-512 vs AVX2 code paths); this is the same everywhere and within 1e-6 of both.
    log = np.log10(np.maximum(floor, m).astype(np.float64)).astype(np.float32)
    db = np.float32(20) * log - np.float32(config.ref_level_db)
    top = np.float32(config.max_abs_value)
    min_db = np.float32(config.min_level_db)
    scaled = (np.float32(2) * top) * ((db - min_db) / -min_db)
    return np.clip(scaled - top, -top, top)


def melspectrogram(wav: np.ndarray, config: MelConfig = MEL) -> np.ndarray:
    """16 kHz mono waveform (float, the absolute level matters) → mel [num_mels, 1 + len // hop]
    float32 in [−4, 4], the features the Wav2Lip generator consumes."""
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise InputError(f"expected a mono waveform, got shape {wav.shape}")
    if not np.all(np.isfinite(wav)):
        raise InputError("audio contains NaN or infinite samples")
    magnitude = stft_magnitude(preemphasis(wav, config.preemphasis), config)
    return amplitude_to_normalized_db(mel_basis(config) @ magnitude, config)


# ---- per-frame windows ----------------------------------------------------------------------

def mel_window_starts(n_mel: int, fps: float) -> list[int]:
    """Start column of the 16-column window of every output frame.

    Frame i starts at int(i · (80.0 / fps)) (float64, truncated: exactly the official formula,
    which at 24000/1001 fps is sometimes one below the exact rational value). The first frame
    whose window would run past the end gets the last 16 columns instead and ends the list, so
    the video is cut to len(result) frames.
    """
    if n_mel < MEL_STEP_SIZE:
        raise InputError(
            f"audio too short for lip sync: {n_mel} mel columns, at least {MEL_STEP_SIZE} (0.2 s) needed"
        )
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    step = MEL_COLUMNS_PER_SECOND / float(fps)
    starts: list[int] = []
    i = 0
    while True:
        start = int(i * step)
        if start + MEL_STEP_SIZE > n_mel:
            starts.append(n_mel - MEL_STEP_SIZE)
            return starts
        starts.append(start)
        i += 1


def mel_windows(mel: np.ndarray, fps: float) -> np.ndarray:
    """[num_mels, T] mel → [N, num_mels, 16] windows, one per output video frame."""
    starts = mel_window_starts(mel.shape[1], fps)
    return np.stack([mel[:, s:s + MEL_STEP_SIZE] for s in starts])


# ---- loading at 16 kHz with a chosen resampler ---------------------------------------------

Resampler = Literal["swr", "soxr", "kaiser_best", "kaiser_best_legacy"]


def load_audio_16k(
    path: Path, resampler: Resampler = "kaiser_best", max_seconds: float = 600.0
) -> np.ndarray:
    """Any audio file → 16 kHz mono float32, resampled the chosen way (see
    services/common/audio.py: ``kaiser_best`` reproduces the official loader exactly)."""
    return decode_audio_file(Path(path), max_seconds, resampler)
