"""Conversion between in-process frames (numpy) and ``talkinghead.v1`` messages.

The only place that knows both worlds. Frames travel between stages as raw RGB24, which is
lossless and needs no codec; people calling one stage by hand may send PNG or JPEG.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import cv2
import numpy as np

from talkinghead.services.common.errors import InputError
from talkinghead.services.common.frames import FaceGeometry, VideoFrame
from talkinghead.v1 import frames_pb2

MAX_FRAME_PIXELS = 4096 * 4096
MESSAGE_HEADROOM_BYTES = 64 * 1024  # for the envelope: config, engine info, field tags


def frame_batches(
    messages: Iterable[frames_pb2.Frame], max_message_bytes: int, max_frames: int | None = None
) -> Iterator[list[frames_pb2.Frame]]:
    """Group frame messages into batches that each fit in one gRPC message.

    Frames travel several to a message (fewer round trips), but never so many that a
    message passes the channel's size limit, whatever the frame size. A frame that cannot
    fit alone is refused, naming it and the limit.
    """
    budget = max_message_bytes - MESSAGE_HEADROOM_BYTES
    batch: list[frames_pb2.Frame] = []
    size = 0
    for msg in messages:
        n = msg.ByteSize() + 16
        if n > budget:
            raise InputError(
                f"frame {msg.index} ({msg.width}x{msg.height}) takes {n} bytes, more than fits "
                f"in one message of at most {max_message_bytes} bytes (raise --max-message-mb)"
            )
        if batch and (size + n > budget or (max_frames and len(batch) >= max_frames)):
            yield batch
            batch, size = [], 0
        batch.append(msg)
        size += n
    if batch:
        yield batch


def geometry_to_proto(face: FaceGeometry) -> frames_pb2.FaceGeometry:
    msg = frames_pb2.FaceGeometry(
        box=frames_pb2.Box(
            x0=face.box[0], y0=face.box[1], x1=face.box[2], y1=face.box[3]
        ),
        landmarks=[frames_pb2.Point(x=float(x), y=float(y)) for x, y in face.landmarks],
        crop_size=int(face.crop_size),
    )
    if face.crop_transform is not None:
        msg.crop_transform.extend(float(v) for v in np.asarray(face.crop_transform).ravel())
    return msg


def geometry_from_proto(msg: frames_pb2.FaceGeometry) -> FaceGeometry:
    landmarks = np.array([[p.x, p.y] for p in msg.landmarks], dtype=np.float32).reshape(-1, 2)
    transform = None
    if len(msg.crop_transform) == 6:
        transform = np.array(msg.crop_transform, dtype=np.float32).reshape(2, 3)
    return FaceGeometry(
        box=(msg.box.x0, msg.box.y0, msg.box.x1, msg.box.y1),
        landmarks=landmarks,
        crop_transform=transform,
        crop_size=msg.crop_size,
    )


def frame_to_proto(frame: VideoFrame) -> frames_pb2.Frame:
    image = np.ascontiguousarray(frame.image, dtype=np.uint8)
    msg = frames_pb2.Frame(
        index=frame.index,
        width=frame.width,
        height=frame.height,
        format=frames_pb2.PIXEL_FORMAT_RGB24,
        data=image.tobytes(),
    )
    if frame.face is not None:
        msg.face.CopyFrom(geometry_to_proto(frame.face))
    return msg


def image_size_from_header(data: bytes) -> tuple[int, int] | None:
    """(width, height) as the file's header states it, read without decoding the pixels
    (None when Pillow does not know the format; the decoder's own checks then apply)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


def check_pixel_limit(size: tuple[int, int] | None, max_pixels: int, what: str) -> None:
    if size is not None and size[0] * size[1] > max_pixels:
        raise InputError(
            f"{what} has {size[0]}x{size[1]} pixels, more than the {max_pixels} allowed"
        )


def decode_image(data: bytes, what: str = "image", max_pixels: int = MAX_FRAME_PIXELS) -> np.ndarray:
    """Encoded image bytes → RGB uint8; InputError naming ``what`` if it is not an image.

    The size limit is checked on the header first, so an image that would take gigabytes
    once decoded (a few kB of PNG can claim 50000x50000) is refused before it is decoded.
    """
    if not data:
        raise InputError(f"{what} is empty")
    check_pixel_limit(image_size_from_header(data), max_pixels, what)
    buffer = np.frombuffer(data, dtype=np.uint8)
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"{what} is not a decodable image (JPEG, PNG, WebP, BMP, TIFF)")
    check_pixel_limit((bgr.shape[1], bgr.shape[0]), max_pixels, what)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def frame_from_proto(msg: frames_pb2.Frame) -> VideoFrame:
    """Decode one frame message; InputError naming the frame index if it is malformed."""
    where = f"frame {msg.index}"
    if msg.format == frames_pb2.PIXEL_FORMAT_RGB24:
        if msg.width == 0 or msg.height == 0:
            raise InputError(f"{where}: width and height are required for RGB24")
        if msg.width * msg.height > MAX_FRAME_PIXELS:
            raise InputError(f"{where}: {msg.width}x{msg.height} exceeds {MAX_FRAME_PIXELS} pixels")
        expected = msg.width * msg.height * 3
        if len(msg.data) != expected:
            raise InputError(
                f"{where}: RGB24 {msg.width}x{msg.height} needs {expected} bytes, got {len(msg.data)}"
            )
        image = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.width, 3).copy()
    elif msg.format in (frames_pb2.PIXEL_FORMAT_PNG, frames_pb2.PIXEL_FORMAT_JPEG):
        image = decode_image(msg.data, what=where)
    else:
        raise InputError(f"{where}: pixel format is unspecified")
    face = geometry_from_proto(msg.face) if msg.HasField("face") else None
    return VideoFrame(index=msg.index, image=image, face=face)


def encode_png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
