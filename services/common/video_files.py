"""Video and image files in and out: the one place the project reads or writes them.

Used by the CLI (``talkinghead call``, ``loop``, ``template extract``), the services (a
template extracted from a driving video) and the bench. Reading decodes with the ffmpeg of
the imageio-ffmpeg wheel, lazily, to RGB; writing an .mp4 goes through the compositor's
encoder (H.264, yuv420p, audio muxed in, the file appearing atomically), so there is one
encoder configuration in the project.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np

from talkinghead.services.common.errors import InputError
from talkinghead.services.common.frames import VideoFrame

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v")


def read_video(path: Path) -> tuple[float, Iterator[VideoFrame]]:
    """(fps, frames) of any video ffmpeg reads, decoded lazily to RGB."""
    if not Path(path).is_file():
        raise InputError(f"video {str(path)!r} does not exist")
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        meta = next(reader)
    except (RuntimeError, OSError, StopIteration) as exc:
        raise InputError(f"video {str(path)!r} is not readable: {exc}") from None
    w, h = meta["size"]

    def frames() -> Iterator[VideoFrame]:
        for i, raw in enumerate(reader):
            yield VideoFrame(i, np.frombuffer(raw, np.uint8).reshape(h, w, 3).copy())

    return float(meta["fps"]), frames()


def read_image(path: Path) -> np.ndarray:
    """An RGB uint8 image from any file OpenCV decodes (within the wire's size limits)."""
    from talkinghead.services.common.wire import decode_image

    if not Path(path).is_file():
        raise InputError(f"image {str(path)!r} does not exist")
    return decode_image(Path(path).read_bytes(), what=f"image {Path(path).name!r}")


def write_video(images: Iterable[np.ndarray], out: Path, fps: float,
                audio: Path | None = None, *, empty: str = "no frames to write") -> int:
    """Encode RGB images to an MP4 (any suffix) at ``fps``, with ``audio`` muxed in if given.

    The size is the first image's, cut to even sides (yuv420p needs them); frames written.
    ``empty`` is the InputError's message when there is no image at all.
    """
    from talkinghead.compositor import VideoEncoder

    iterator = iter(images)
    first = next(iterator, None)
    if first is None:
        raise InputError(empty)
    height, width = first.shape[:2]
    size = (width // 2 * 2, height // 2 * 2)
    count = 0
    with VideoEncoder(Path(out), fps, size=size, audio_path=audio) as encoder:
        for image in itertools.chain([first], iterator):
            encoder.write(np.ascontiguousarray(image[: size[1], : size[0]]))
            count += 1
    return count


def write_frames(frames: Iterable[VideoFrame], out: Path, fps: float,
                 audio: Path | None = None) -> int:
    """Write to .mp4 (H.264, with the audio if given), one .png, or a folder of PNGs."""
    out = Path(out)
    count = 0
    if out.suffix.lower() == ".png":
        for frame in frames:
            cv2.imwrite(str(out), cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
            count += 1
        return count
    if out.suffix.lower() in VIDEO_SUFFIXES:
        return write_video((f.image for f in frames), out, fps, audio)
    out.mkdir(parents=True, exist_ok=True)
    for frame in frames:
        cv2.imwrite(str(out / f"{frame.index:06d}.png"), cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
        count += 1
    return count
