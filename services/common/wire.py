"""Conversion between in-process frames (numpy) and ``talkinghead.v1`` messages.

The only place that knows both worlds. Frames travel between stages as raw RGB24, which is
lossless and needs no codec; people calling one stage by hand may send PNG or JPEG.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

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
        clip_key=face.clip_key,
        clip_frame=int(face.clip_frame),
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
        clip_key=msg.clip_key,
        clip_frame=msg.clip_frame,
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


IMAGE_FORMATS = "JPEG, PNG, WebP, BMP, TIFF"  # the encoded images accepted, by signature


def _sniff_format(head: bytes) -> str | None:
    """The format a decoder will pick for these first bytes (its signature), or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


def _read_exact(fp: BinaryIO, n: int) -> bytes:
    data = fp.read(n)
    if len(data) != n:
        raise ValueError("the file ends inside its header")
    return data


def _png_size(fp: BinaryIO) -> tuple[int, int]:
    # the signature, then IHDR, which the PNG format requires to be the first chunk
    head = _read_exact(fp, 24)
    if head[12:16] != b"IHDR":
        raise ValueError("IHDR is not the first chunk")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(fp: BinaryIO) -> tuple[int, int]:
    # the first start-of-frame marker holds the size (a decoder refuses a second one); the
    # segments before it (APPn, DQT, DHT, COM, ...) are skipped by their stated length
    _read_exact(fp, 2)  # SOI
    while True:
        byte = _read_exact(fp, 1)[0]
        if byte != 0xFF:
            raise ValueError(f"expected a marker, found byte 0x{byte:02x}")
        marker = _read_exact(fp, 1)[0]
        while marker == 0xFF:  # fill bytes
            marker = _read_exact(fp, 1)[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no payload
            continue
        if marker in (0xD8, 0xD9, 0xDA):
            raise ValueError("no frame header before the image data")
        length = int.from_bytes(_read_exact(fp, 2), "big")
        if length < 2:
            raise ValueError(f"segment 0x{marker:02x} has length {length}")
        if marker in _JPEG_SOF:
            frame = _read_exact(fp, 5)  # precision, height, width
            return int.from_bytes(frame[3:5], "big"), int.from_bytes(frame[1:3], "big")
        fp.seek(length - 2, 1)


def _webp_size(fp: BinaryIO) -> tuple[int, int]:
    head = _read_exact(fp, 30)
    chunk, payload = head[12:16], head[20:30]
    if chunk == b"VP8 ":  # lossy: frame tag (3), start code (3), 14-bit width and height
        if payload[3:6] != b"\x9d\x01\x2a":
            raise ValueError("VP8 start code missing")
        return (int.from_bytes(payload[6:8], "little") & 0x3FFF,
                int.from_bytes(payload[8:10], "little") & 0x3FFF)
    if chunk == b"VP8L":  # lossless: signature, then 14-bit width-1 and height-1
        if payload[0] != 0x2F:
            raise ValueError("VP8L signature missing")
        bits = int.from_bytes(payload[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: flags (4), 24-bit canvas width-1 and height-1
        return (int.from_bytes(payload[4:7], "little") + 1,
                int.from_bytes(payload[7:10], "little") + 1)
    raise ValueError(f"unknown first chunk {chunk!r}")


def _bmp_size(fp: BinaryIO) -> tuple[int, int]:
    head = _read_exact(fp, 26)
    if int.from_bytes(head[14:18], "little") == 12:  # OS/2 core header: 16-bit sizes
        return int.from_bytes(head[18:20], "little"), int.from_bytes(head[20:22], "little")
    # negative height: rows stored top-down
    return (abs(int.from_bytes(head[18:22], "little", signed=True)),
            abs(int.from_bytes(head[22:26], "little", signed=True)))


def _tiff_size(fp: BinaryIO) -> tuple[int, int]:
    # Pillow's TIFF parser reads the first directory's tags, no pixels. It is called
    # directly, not through Image.open, whose decompression-bomb check would raise for
    # exactly the images this check exists to name.
    from PIL import TiffImagePlugin

    return TiffImagePlugin.TiffImageFile(fp).size


_HEADER_READERS = {"PNG": _png_size, "JPEG": _jpeg_size, "WebP": _webp_size,
                   "BMP": _bmp_size, "TIFF": _tiff_size}


def image_size_from_header(source: bytes | BinaryIO, what: str = "image") -> tuple[int, int]:
    """(width, height) as the image's header states it, read without decoding any pixel.

    Only the formats in IMAGE_FORMATS are accepted, recognised by their signature (the one
    the decoder goes by). An image whose header is missing, truncated or states no size is
    refused (InputError), never decoded to find out: its size is what bounds the memory a
    decode takes (a 2.6 MB PNG can claim 30000x30000, 2.7 GB once decoded).
    """
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    start = fp.tell()
    fmt = _sniff_format(fp.read(16))
    if fmt is None:
        raise InputError(f"{what} is not a decodable image ({IMAGE_FORMATS})")
    fp.seek(start)
    try:
        width, height = _HEADER_READERS[fmt](fp)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure means: header unreadable
        raise InputError(f"{what} is not a decodable image: its {fmt} header cannot be "
                         f"read ({exc})") from None
    if width <= 0 or height <= 0:
        raise InputError(f"{what} is not a decodable image: its {fmt} header states "
                         f"{width}x{height} pixels")
    return width, height


def check_pixel_limit(size: tuple[int, int], max_pixels: int, what: str) -> None:
    if size[0] * size[1] > max_pixels:
        raise InputError(
            f"{what} has {size[0]}x{size[1]} pixels, more than the {max_pixels} allowed"
        )


def check_image_header(source: bytes | BinaryIO, max_pixels: int, what: str) -> tuple[int, int]:
    """The header's (width, height); InputError naming the size and the limit when the image
    has more than ``max_pixels`` pixels, or when its header cannot be read. Decodes nothing."""
    size = image_size_from_header(source, what)
    if size[0] * size[1] > max_pixels:
        raise InputError(
            f"{what} has {size[0]}x{size[1]} pixels, more than the {max_pixels} allowed "
            f"(refused from its header, not decoded)"
        )
    return size


def check_image_file(path: Path, max_pixels: int, what: str) -> tuple[int, int]:
    """check_image_header for a file on disk (reads only its header)."""
    try:
        with Path(path).open("rb") as fh:
            return check_image_header(fh, max_pixels, what)
    except FileNotFoundError:
        raise InputError(f"{what} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{what} is a directory, not an image") from None


def decode_image(data: bytes, what: str = "image", max_pixels: int = MAX_FRAME_PIXELS) -> np.ndarray:
    """Encoded image bytes → RGB uint8; InputError naming ``what`` if it is not an image.

    The size limit is checked on the header first (check_image_header), so an image that
    would take gigabytes once decoded is refused before anything is decoded.
    """
    if not data:
        raise InputError(f"{what} is empty")
    check_image_header(data, max_pixels, what)
    buffer = np.frombuffer(data, dtype=np.uint8)
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"{what} is not a decodable image ({IMAGE_FORMATS})")
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
