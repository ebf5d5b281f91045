"""Audio in: anything ffmpeg decodes, resampled to 16 kHz mono float32.

16 kHz mono is what the lipsync models consume (Wav2Lip's mel front end), so the pipeline
decodes once, at the edge, and sends PCM between stages.
"""

from __future__ import annotations

import os
import re
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


def decode_audio_file(path: Path, max_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
                      resampler: str = "kaiser_best") -> np.ndarray:
    """Decode an audio (or video) file to 16 kHz mono float32 in [-1, 1].

    ffmpeg decodes at the source's own rate, channels are averaged, and the signal is
    resampled as Wav2Lip's loader does (``kaiser_best``, see resample.py), so the lipsync
    features match the official ones for any input rate. A 16 kHz 16-bit file comes out as
    exactly int16 / 32768. ``swr``/``soxr`` use ffmpeg's resamplers instead (faster, not
    identical features).
    """
    from talkinghead.services.common.resample import KAISER_BEST, KAISER_BEST_LEGACY, resample_sinc

    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio file {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"audio file {str(path)!r} is empty")
    check_stated_duration(path, max_seconds)  # from the header: nothing decoded yet
    if resampler in ("swr", "soxr"):
        filters = ["-af", "aresample=resampler=soxr"] if resampler == "soxr" else []
        raw = _ffmpeg(path, ["-ac", "1", *filters, "-ar", str(SAMPLE_RATE)], "s16le", max_seconds)
        samples = pcm_s16le_to_float(raw)
    elif resampler in ("kaiser_best", "kaiser_best_legacy"):
        rate, channels = _source_format(path)
        raw = _ffmpeg(path, [], "f32le", max_seconds)
        frames = np.frombuffer(raw, dtype="<f4")
        frames = frames[: len(frames) // channels * channels].reshape(-1, channels)
        mono = frames.mean(axis=1, dtype=np.float32) if channels > 1 else frames[:, 0]
        spec = KAISER_BEST if resampler == "kaiser_best" else KAISER_BEST_LEGACY
        if len(mono) * SAMPLE_RATE // max(rate, 1) < 1:
            raise InputError(f"audio file {path.name!r} is empty or shorter than 0.1 s")
        if len(mono) / max(rate, 1) > max_seconds:  # a header that understated: not resampled
            raise InputError(f"audio file {path.name!r} is longer than the {max_seconds:g} s limit")
        samples = resample_sinc(mono, rate, SAMPLE_RATE, spec)
    else:
        raise ValueError(f"unknown resampler {resampler!r} (kaiser_best, kaiser_best_legacy, swr, soxr)")
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


_DURATION = re.compile(rb"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_ESTIMATED = b"Estimating duration from bitrate"
# A container's duration can differ a little from what decodes (encoder delay and padding);
# the decoded length is checked again, so the header check leaves this much room.
CONTAINER_SLACK_SECONDS = 0.5


def wav_stated_duration(path: Path) -> float | None:
    """Seconds a RIFF/WAVE file's header states (data chunk size / byte rate), read from
    its first bytes; None when it is no WAV or states no usable size (then ask ffmpeg).

    A data size of 0, or one larger than the file holds (0xFFFFFFFF and other placeholders
    of writers that stream and cannot go back to fill it in, or a cut-off file), is taken as
    "to the end of the file": the bytes present are all a decoder can read.
    """
    try:
        with Path(path).open("rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            byte_rate = None
            for _ in range(64):  # chunks before "data": fmt, LIST, fact, bext, ...
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                kind, size = chunk[:4], int.from_bytes(chunk[4:8], "little")
                if kind == b"fmt ":
                    fmt = fh.read(16)
                    if len(fmt) < 16:
                        return None
                    byte_rate = int.from_bytes(fmt[8:12], "little")
                    fh.seek(size + (size & 1) - 16, 1)
                elif kind == b"data":
                    if not byte_rate:
                        return None
                    present = max(0, os.fstat(fh.fileno()).st_size - fh.tell())
                    if size == 0 or size > present:
                        size = present
                    return size / byte_rate
                else:
                    fh.seek(size + (size & 1), 1)
    except OSError:
        return None
    return None


def stated_duration(path: Path) -> tuple[float, bool] | None:
    """(seconds, exact) as the file's header states its length, without decoding it.

    A WAV's header is read here; any other container is asked of ffmpeg (``ffmpeg -i``
    prints the duration its demuxer reads from the header and decodes nothing). ``exact``
    is False when ffmpeg only estimated the length from the bitrate and the file size (an
    MP3 without a Xing header): such an estimate can be several times off for
    variable-bitrate speech, so it is no ground to refuse a file. None when the file states
    no duration.
    """
    seconds = wav_stated_duration(path)
    if seconds is not None:
        return seconds, True
    return _ffmpeg_stated_duration(path)


def _ffmpeg_stated_duration(path: Path) -> tuple[float, bool] | None:
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _DURATION.search(proc.stderr)
    if match is None:
        return None
    hours, minutes, secs = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(secs), _ESTIMATED not in proc.stderr


def probe_duration_seconds(path: Path) -> float | None:
    """The container's stated duration, without decoding (None when it states none).

    Cheap enough for a Celery worker's main process to size a job's time limits with.
    """
    stated = stated_duration(path)
    return None if stated is None else stated[0]


def check_stated_duration(path: Path, max_seconds: float) -> None:
    """Refuse a file whose header states a length over the limit, before decoding any of it.

    A 2 h WAV is refused in milliseconds instead of being decoded and resampled first. A
    file whose header states nothing, or only an estimate, is decoded with ``-t`` one second
    past the limit, so its cost stays bounded by the limit and its length is checked then.
    """
    seconds, slack = wav_stated_duration(path), 0.0
    if seconds is None:
        stated = _ffmpeg_stated_duration(path)
        if stated is None or not stated[1]:
            return
        seconds, slack = stated[0], CONTAINER_SLACK_SECONDS
    if seconds > max_seconds + slack:
        raise InputError(
            f"audio file {Path(path).name!r} is longer than the {max_seconds:g} s limit: its "
            f"header states {seconds:.1f} s (refused before decoding)"
        )


def _ffmpeg(path: Path, options: list[str], sample_format: str, max_seconds: float) -> bytes:
    """Raw PCM of the first audio stream (``-t`` one second past the limit, to detect it)."""
    cmd = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
        "-i", str(path), "-vn", *options, "-t", f"{max_seconds + 1.0:.3f}",
        "-f", sample_format, "-acodec", f"pcm_{sample_format}", "pipe:1",
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        reason = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["?"]
        raise InputError(f"audio file {path.name!r} is not decodable audio: {reason[0]}")
    return proc.stdout


def _source_format(path: Path) -> tuple[int, int]:
    """(sample rate, channels) of the first audio stream, from the header of a WAV that
    ffmpeg writes for a few milliseconds of it (no ffprobe in the imageio-ffmpeg wheel)."""
    cmd = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
        "-i", str(path), "-vn", "-t", "0.01", "-acodec", "pcm_s16le", "-f", "wav", "pipe:1",
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    data = proc.stdout
    if proc.returncode != 0 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise InputError(f"audio file {path.name!r} is not decodable audio")
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if chunk == b"fmt ":
            channels = int.from_bytes(data[pos + 10:pos + 12], "little")
            rate = int.from_bytes(data[pos + 12:pos + 16], "little")
            return rate, channels
        pos += 8 + size + (size & 1)
    raise InputError(f"audio file {path.name!r}: no audio format found")
