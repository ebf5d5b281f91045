"""Audio in: anything ffmpeg decodes, resampled to 16 kHz mono float32.

16 kHz mono is what the lipsync models consume (Wav2Lip's mel front end), so the pipeline
decodes once, at the edge, and sends PCM between stages.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from talkinghead.services.common.errors import InputError

SAMPLE_RATE = 16_000
DEFAULT_MAX_AUDIO_SECONDS = float(os.environ.get("TALKINGHEAD_MAX_AUDIO_SECONDS", "600"))


def ffmpeg_exe() -> str:
    """The ffmpeg binary shipped in the imageio-ffmpeg wheel (no system ffmpeg needed)."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def decode_audio_file(path: Path, max_seconds: float = DEFAULT_MAX_AUDIO_SECONDS) -> np.ndarray:
    """Decode an audio (or video) file to 16 kHz mono float32 in [-1, 1]."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio file {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"audio file {str(path)!r} is empty")
    cmd = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
        "-i", str(path), "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE),
        # Decode one second past the limit: enough to tell "too long" without reading it all.
        "-t", f"{max_seconds + 1.0:.3f}",
        "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1",
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        reason = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["?"]
        raise InputError(f"audio file {path.name!r} is not decodable audio: {reason[0]}")
    samples = pcm_s16le_to_float(proc.stdout)
    check_audio(samples, max_seconds, what=f"audio file {path.name!r}")
    return samples


def decode_audio_bytes(data: bytes, max_seconds: float = DEFAULT_MAX_AUDIO_SECONDS) -> np.ndarray:
    """Like decode_audio_file, for the bytes of a file received over the wire."""
    if not data:
        raise InputError("audio is empty")
    with tempfile.NamedTemporaryFile(suffix=".audio") as tmp:
        tmp.write(data)
        tmp.flush()
        return decode_audio_file(Path(tmp.name), max_seconds)


def pcm_s16le_to_float(data: bytes) -> np.ndarray:
    if len(data) % 2:
        raise InputError("PCM audio has an odd number of bytes (expected 16-bit samples)")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm_s16le(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def check_audio(samples: np.ndarray, max_seconds: float, what: str = "audio") -> None:
    """Reject audio that is empty or longer than the limit; silence is allowed."""
    seconds = len(samples) / SAMPLE_RATE
    if len(samples) < SAMPLE_RATE // 10:
        raise InputError(f"{what} is empty or shorter than 0.1 s ({seconds:.3f} s of audio)")
    if seconds > max_seconds:
        raise InputError(f"{what} is longer than the {max_seconds:g} s limit")


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """16-bit mono WAV, for handing PCM to ffmpeg when muxing."""
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(float_to_pcm_s16le(samples))
