"""Wav2Lip's audio front end against the reference pack (``audio.npz``, ``speech_like.wav``).

Every intermediate of the official ``audio.py`` must be reproduced (the mel within 5e-4, the
pack's tolerance; the others within bounds far below what would move the mel by that much),
the file must decode through our own decoder to exactly what librosa returned, and the
per-frame windows (starts, counts, the tail rule) must be exactly the official ones at every
frame rate in the pack. The 44.1 kHz copy checks the loader's resampling (resampy kaiser_best).
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from talkinghead.services.common.audio import decode_audio_file
from talkinghead.services.common.errors import InputError
from talkinghead.services.lipsync.mel import (
    MEL,
    amplitude_to_normalized_db,
    load_audio_16k,
    mel_basis,
    mel_window_starts,
    mel_windows,
    melspectrogram,
    preemphasis,
    resample_sinc,
    stft_magnitude,
)
from tests.reference_pack import assert_close, fixture, fixture_tags, require

pytestmark = pytest.mark.reference

FIXTURE = "wav2lip/audio.npz"
WAV = "wav2lip/speech_like.wav"
MEL_TOL = 5e-4


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    return fixture(FIXTURE)


def relative(expected: np.ndarray, factor: float) -> float:
    return factor * max(1.0, float(np.max(np.abs(expected))))


def write_pcm16(path: Path, samples: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return path


# ---- loading -----------------------------------------------------------------------------

def test_our_decoder_loads_the_wav_exactly(data):
    wav = decode_audio_file(require(WAV))
    assert wav.dtype == np.float32
    assert np.array_equal(wav, data["wav_float32"])
    assert np.array_equal(data["wav_float32"], data["wav_int16"].astype(np.float32) / 32768)
    assert np.array_equal(load_audio_16k(require(WAV), "kaiser_best"), data["wav_float32"])


def test_kaiser_best_resampling_matches_the_official_loader(data, tmp_path):
    """A 44.1 kHz wav: decoded at its own rate, resampled like resampy kaiser_best."""
    x = data["wav44100_int16"].astype(np.float32) / 32768
    expected = data["wav44100_loaded_16k"]
    assert_close(resample_sinc(x, 44100, 16000), expected, 1e-6, "resample_sinc(wav44100)")
    loaded = load_audio_16k(write_pcm16(tmp_path / "a44.wav", data["wav44100_int16"], 44100), "kaiser_best")
    assert loaded.dtype == np.float32
    assert_close(loaded, expected, 1e-6, "load_audio_16k(kaiser_best)")
    assert_close(melspectrogram(loaded), data["mel_from_44100"], MEL_TOL, "mel_from_44100")


# ---- every intermediate ------------------------------------------------------------------

def test_intermediates_match_fixture(data):
    wav = data["wav_float32"]
    pre = preemphasis(wav)
    assert pre.dtype == np.float64
    assert_close(pre, data["preemphasized"], 1e-12, "preemphasized")

    magnitude = stft_magnitude(pre)
    expected = data["stft_magnitude"]
    assert magnitude.dtype == np.float32 and magnitude.shape == (401, 1 + len(wav) // 200)
    assert_close(magnitude, expected, relative(expected, 1e-5), "stft_magnitude")

    basis = mel_basis()
    assert basis.dtype == np.float32
    assert_close(basis, data["mel_basis"], relative(data["mel_basis"], 1e-6), "mel_basis")

    amplitude = basis @ magnitude
    assert_close(amplitude, data["mel_amplitude"], relative(data["mel_amplitude"], 1e-5), "mel_amplitude")
    assert_close(amplitude_to_normalized_db(data["mel_amplitude"]), data["mel"], MEL_TOL, "dB + normalise")

    mel = melspectrogram(wav)
    assert mel.dtype == np.float32 and mel.shape == data["mel"].shape
    assert_close(mel, data["mel"], MEL_TOL, "mel")


def test_mel_range_silence_and_bad_input(data):
    # Symmetric normalisation clips to ±max_abs_value whatever the waveform; the pack's
    # waveform may or may not hold silence, so the floor is checked on silence made here.
    limit = MEL.max_abs_value
    mel = melspectrogram(data["wav_float32"])
    assert mel.min() >= -limit and mel.max() <= limit
    clipped = data["mel"] == -limit  # wherever the reference hit the floor, so do we
    assert np.all(mel[clipped] <= -limit + MEL_TOL)
    assert np.all(melspectrogram(np.zeros(16000, dtype=np.float32)) == -limit)  # digital silence
    loud = (100 * np.sin(np.arange(16000) * 0.3)).astype(np.float32)  # 40 dB past full scale
    assert melspectrogram(loud).max() == limit
    bad = data["wav_float32"].copy()
    bad[100] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        melspectrogram(bad)


def test_mel_basis_is_cached_and_read_only():
    assert mel_basis() is mel_basis()
    assert not mel_basis().flags.writeable


# ---- per-frame windows -------------------------------------------------------------------

@pytest.mark.parametrize("tag", fixture_tags(FIXTURE, "num_chunks_fps", "", ("25", "30", "29_97")))
def test_window_starts_and_counts(data, tag):
    fps = float(data["fps_values"][list(data["fps_tags"]).index(tag)])
    starts = mel_window_starts(data["mel"].shape[1], fps)
    assert starts == data[f"chunk_starts_fps{tag}"].tolist()
    assert len(starts) == int(data[f"num_chunks_fps{tag}"])


def test_window_starts_for_90_seconds(data):
    n_mel = int(data["n_mel_90s"])
    for tag, fps in zip(data["fps_tags"], data["fps_values"], strict=True):
        starts = mel_window_starts(n_mel, float(fps))
        expected = data[f"chunk_starts_90s_fps{tag}"]
        assert len(starts) == len(expected), f"{tag} fps: {len(starts)} windows, expected {len(expected)}"
        assert starts == expected.tolist(), f"{tag} fps: window starts differ"


def test_windows_first_four_and_tail(data):
    windows = mel_windows(data["mel"], 25.0)
    assert windows.shape == (int(data["num_chunks_fps25"]), 80, 16)
    assert np.array_equal(windows[:4], data["chunks_fps25_first4"])
    assert np.array_equal(windows[-1], data["chunk_fps25_last"])
    ours = mel_windows(melspectrogram(data["wav_float32"]), 25.0)
    assert_close(ours[:4], data["chunks_fps25_first4"], MEL_TOL, "first four windows")
    assert_close(ours[-1], data["chunk_fps25_last"], MEL_TOL, "tail window")


def test_too_short_for_a_window():
    with pytest.raises(InputError, match="too short"):
        mel_window_starts(15, 25.0)
