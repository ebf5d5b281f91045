"""What is inside a media file: duration, streams, and whether the MP4 is "fast start".

There is no ffprobe next to the ffmpeg that imageio-ffmpeg ships, so we read the stream
summary that ``ffmpeg -i FILE`` prints before it complains about the missing output.
Fast start (the index, ``moov``, ahead of the media data, ``mdat``, so playback can begin
while downloading) is read directly from the order of the MP4's top-level boxes.
"""

from __future__ import annotations

import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg

_DURATION = re.compile(r"Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")
_STREAM = re.compile(r"^\s*Stream #\d+:\d+\S*: (Video|Audio): (.+)$", re.MULTILINE)
_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})(?:\s|$)")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(k?)\s+(fps|tbr)$")
_SAMPLE_RATE = re.compile(r"^(\d+)\s*Hz$")
_CHANNELS = re.compile(r"^(\d+)\s+channels?")
_LAYOUT_CHANNELS = {
    "mono": 1,
    "stereo": 2,
    "2.1": 3,
    "3.0": 3,
    "quad": 4,
    "4.0": 4,
    "4.1": 5,
    "5.0": 5,
    "5.0(side)": 5,
    "5.1": 6,
    "5.1(side)": 6,
    "6.1": 7,
    "7.1": 8,
}


class ProbeError(RuntimeError):
    """ffmpeg could not read the file as media."""


@dataclass(frozen=True)
class MediaInfo:
    """The first video and first audio stream of a file, as ffmpeg reports them."""

    duration_s: float | None
    width: int | None
    height: int | None
    fps: float | None
    video_codec: str | None
    pix_fmt: str | None
    audio_codec: str | None
    audio_sample_rate: int | None
    audio_channels: int | None
    has_audio: bool
    faststart: bool

    @property
    def has_video(self) -> bool:
        return self.video_codec is not None


def probe(path: Path) -> MediaInfo:
    """Describe the media file at `path`; raises ProbeError if ffmpeg cannot read it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such media file: {path}")
    report = _ffmpeg_input_report(path)
    return parse_input_report(report, faststart=is_faststart(path), source=str(path))


def parse_input_report(report: str, faststart: bool = False, source: str = "input") -> MediaInfo:
    """Parse the stream summary that ``ffmpeg -i`` prints to stderr."""
    streams = _STREAM.findall(report)
    video = next((d for kind, d in streams if kind == "Video" and "attached pic" not in d), None)
    audio = next((d for kind, d in streams if kind == "Audio"), None)
    if video is None and audio is None:
        lines = [line for line in report.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else "no output from ffmpeg"
        raise ProbeError(f"ffmpeg found no audio or video stream in {source}: {reason}")

    duration = _DURATION.search(report)
    width = height = None
    fps = None
    video_codec = pix_fmt = None
    if video is not None:
        fields = split_top_level(video)
        video_codec = _first_word(fields[0])
        if len(fields) > 1:
            pix_fmt = fields[1].split("(")[0].strip() or None
        for field in fields:
            size = _SIZE.match(field)
            if size and width is None:
                width, height = int(size.group(1)), int(size.group(2))
        fps = _frame_rate(fields)

    audio_codec = None
    sample_rate = channels = None
    if audio is not None:
        fields = split_top_level(audio)
        audio_codec = _first_word(fields[0])
        for field in fields[1:]:
            rate = _SAMPLE_RATE.match(field)
            if rate:
                sample_rate = int(rate.group(1))
            elif channels is None:
                channels = _channel_count(field)

    return MediaInfo(
        duration_s=(
            int(duration.group(1)) * 3600 + int(duration.group(2)) * 60 + float(duration.group(3))
            if duration
            else None
        ),
        width=width,
        height=height,
        fps=fps,
        video_codec=video_codec,
        pix_fmt=pix_fmt,
        audio_codec=audio_codec,
        audio_sample_rate=sample_rate,
        audio_channels=channels,
        has_audio=audio is not None,
        faststart=faststart,
    )


def is_faststart(path: Path) -> bool:
    """True if the MP4's ``moov`` box comes before its ``mdat`` box at the top level."""
    order: list[bytes] = []
    with open(path, "rb") as file:
        file.seek(0, 2)
        end = file.tell()
        position = 0
        while position + 8 <= end:
            file.seek(position)
            size, kind = struct.unpack(">I4s", file.read(8))
            if size == 1:  # a 64-bit size follows the type
                size = struct.unpack(">Q", file.read(8))[0]
            elif size == 0:  # the box runs to the end of the file
                size = end - position
            if size < 8:
                return False  # not an MP4 (or a corrupt one)
            order.append(kind)
            if kind in (b"moov", b"mdat"):
                break
            position += size
    return bool(order) and order[-1] == b"moov"


def split_top_level(description: str) -> list[str]:
    """Split ffmpeg's "a (x, y), b, c" stream description on commas outside parentheses."""
    fields: list[str] = []
    depth = 0
    current = []
    for char in description:
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        if char == "," and depth == 0:
            fields.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    fields.append("".join(current).strip())
    return [f for f in fields if f]


def _ffmpeg_input_report(path: Path) -> str:
    # Without an output file ffmpeg exits with an error after printing the input summary,
    # which is all we want; so its exit code says nothing here.
    result = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
        timeout=60,
    )
    return result.stderr.decode("utf-8", errors="replace")


def _first_word(field: str) -> str:
    return field.split()[0] if field.split() else field


def _frame_rate(fields: list[str]) -> float | None:
    """The "fps" figure if ffmpeg gives one, else the "tbr" (its best guess)."""
    rates: dict[str, float] = {}
    for field in fields:
        match = _RATE.match(field)
        if match:
            value = float(match.group(1)) * (1000 if match.group(2) else 1)
            rates.setdefault(match.group(3), value)
    return rates.get("fps", rates.get("tbr"))


def _channel_count(field: str) -> int | None:
    if field in _LAYOUT_CHANNELS:
        return _LAYOUT_CHANNELS[field]
    match = _CHANNELS.match(field)
    return int(match.group(1)) if match else None
