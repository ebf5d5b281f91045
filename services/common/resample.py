"""Resampling to 16 kHz the way Wav2Lip's loader does it (librosa 0.7 → resampy).

The lipsync generator was trained on features of audio resampled with resampy's
``kaiser_best`` filter; ffmpeg's resamplers cut the top mel bands differently (up to 0.55
in the mel of a 44.1 kHz file). So every non-16 kHz input is decoded at its own rate and
resampled here, which reproduces the official waveform bit for bit.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from talkinghead.services.common.errors import InputError


@dataclass(frozen=True)
class SincFilter:
    """A Kaiser-windowed sinc interpolation table (Smith's bandlimited interpolation, as
    resampy implements it): the right wing sampled ``precision`` times per zero crossing."""

    num_zeros: int
    precision: int
    rolloff: float  # cutoff as a fraction of the (lower) Nyquist frequency
    beta: float  # Kaiser window shape


# resampy >= 0.3 "kaiser_best" (what librosa + resampy install today, and what the reference
# pack was made with) and resampy <= 0.2.2's (what a 2020 install of Wav2Lip's requirements,
# which do not pin resampy, got). They differ by up to 0.36 in the mel of a 44.1 kHz file.
# Parameters recovered from resampy's stored tables; rebuilt with np.kaiser they agree to 4e-16.
KAISER_BEST = SincFilter(
    num_zeros=50, precision=2**13, rolloff=0.9173473712608761, beta=12.984585247040012
)
KAISER_BEST_LEGACY = SincFilter(
    num_zeros=64, precision=2**9, rolloff=0.9475937167399596, beta=14.769656459379487
)


@functools.cache
def sinc_table(spec: SincFilter) -> np.ndarray:
    """Right wing of the interpolation filter, num_zeros · precision + 1 float64 values."""
    n = spec.num_zeros * spec.precision
    sinc = spec.rolloff * np.sinc(spec.rolloff * np.linspace(0.0, spec.num_zeros, n + 1))
    table = sinc * np.kaiser(2 * n + 1, spec.beta)[n:]
    table.setflags(write=False)
    return table


def resample_sinc(
    x: np.ndarray, sr_orig: int, sr_new: int, spec: SincFilter = KAISER_BEST, chunk: int = 2048
) -> np.ndarray:
    """Resample mono ``x`` like librosa 0.7's ``load(sr=…)`` (resampy, then zero-padded to
    ceil(len · sr_new / sr_orig)); float32 out, bit for bit resampy's on the reference.

    Output sample t sits at input time t · sr_orig / sr_new; each wing of the filter is read
    every ``scale · precision`` table entries (scale = min(1, ratio), which lowers the cutoff
    when downsampling) with linear interpolation between entries, and samples outside the
    signal count as zero. Vectorised over blocks of ``chunk`` outputs.
    """
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"expected a mono signal, got shape {x.shape}")
    if sr_orig <= 0 or sr_new <= 0:
        raise ValueError(f"invalid sample rates {sr_orig} -> {sr_new}")
    if sr_orig == sr_new:
        return x.astype(np.float32, copy=True)
    ratio = float(sr_new) / sr_orig
    n_out = int(len(x) * float(sr_new) / float(sr_orig))
    n_final = -(-len(x) * sr_new // sr_orig)  # ceil, librosa 0.7's fix_length
    if n_out < 1:
        raise InputError(f"audio of {len(x)} samples is too short to resample {sr_orig} -> {sr_new} Hz")

    win = sinc_table(spec) * ratio if ratio < 1 else sinc_table(spec)
    delta = np.diff(win, append=win[-1])
    scale = min(1.0, ratio)
    step = int(scale * spec.precision)
    taps = -(-len(win) // step)  # enough for every offset; the rest are masked out
    # Zero padding of `taps` each side stands in for the wings' bounds checks.
    padded = np.concatenate([np.zeros(taps), np.asarray(x, dtype=np.float64), np.zeros(taps + 1)])
    k = np.arange(taps)
    y = np.zeros(n_final, dtype=np.float32)
    t_all = np.arange(n_out) * (1.0 / ratio)
    for lo in range(0, n_out, chunk):
        t = t_all[lo:lo + chunk]
        n = t.astype(np.int64)
        frac = scale * (t - n)
        acc = np.zeros(len(t), dtype=np.float32)
        # Left wing reads x[n], x[n-1], …; right wing x[n+1], x[n+2], … from phase scale − frac.
        for phase, sign, first in ((frac, -1, 0), (scale - frac, 1, 1)):
            index = phase * spec.precision
            offset = index.astype(np.int64)
            eta = index - offset
            count = (len(win) - offset) // step  # taps this output may use (resampy's bound)
            valid = k[:, None] < count[None, :]  # [taps, outputs], one tap per row
            pos = np.where(valid, offset[None, :] + k[:, None] * step, 0)
            weight = np.where(valid, win[pos] + eta[None, :] * delta[pos], 0.0)
            products = weight * padded[taps + n[None, :] + sign * (k[:, None] + first)]
            # resampy adds tap by tap into the float32 output; doing the same (products in
            # float64, the running sum rounded to float32 after every tap) keeps its rounding.
            for row in products:
                acc = (acc + row).astype(np.float32)
        y[lo:lo + len(t)] = acc
    return y
