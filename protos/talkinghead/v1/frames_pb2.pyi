from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PixelFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIXEL_FORMAT_UNSPECIFIED: _ClassVar[PixelFormat]
    PIXEL_FORMAT_RGB24: _ClassVar[PixelFormat]
    PIXEL_FORMAT_PNG: _ClassVar[PixelFormat]
    PIXEL_FORMAT_JPEG: _ClassVar[PixelFormat]
PIXEL_FORMAT_UNSPECIFIED: PixelFormat
PIXEL_FORMAT_RGB24: PixelFormat
PIXEL_FORMAT_PNG: PixelFormat
PIXEL_FORMAT_JPEG: PixelFormat

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x0", "y0", "x1", "y1")
    X0_FIELD_NUMBER: _ClassVar[int]
    Y0_FIELD_NUMBER: _ClassVar[int]
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    x0: float
    y0: float
    x1: float
    y1: float
    def __init__(self, x0: _Optional[float] = ..., y0: _Optional[float] = ..., x1: _Optional[float] = ..., y1: _Optional[float] = ...) -> None: ...

class FaceGeometry(_message.Message):
    __slots__ = ("box", "landmarks", "crop_transform", "crop_size", "clip_key", "clip_frame")
    BOX_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    CROP_TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    CROP_SIZE_FIELD_NUMBER: _ClassVar[int]
    CLIP_KEY_FIELD_NUMBER: _ClassVar[int]
    CLIP_FRAME_FIELD_NUMBER: _ClassVar[int]
    box: Box
    landmarks: _containers.RepeatedCompositeFieldContainer[Point]
    crop_transform: _containers.RepeatedScalarFieldContainer[float]
    crop_size: int
    clip_key: str
    clip_frame: int
    def __init__(self, box: _Optional[_Union[Box, _Mapping]] = ..., landmarks: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., crop_transform: _Optional[_Iterable[float]] = ..., crop_size: _Optional[int] = ..., clip_key: _Optional[str] = ..., clip_frame: _Optional[int] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("index", "width", "height", "format", "data", "face")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FACE_FIELD_NUMBER: _ClassVar[int]
    index: int
    width: int
    height: int
    format: PixelFormat
    data: bytes
    face: FaceGeometry
    def __init__(self, index: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., format: _Optional[_Union[PixelFormat, str]] = ..., data: _Optional[bytes] = ..., face: _Optional[_Union[FaceGeometry, _Mapping]] = ...) -> None: ...

class Audio(_message.Message):
    __slots__ = ("pcm_s16le_16k_mono", "encoded_file")
    PCM_S16LE_16K_MONO_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FILE_FIELD_NUMBER: _ClassVar[int]
    pcm_s16le_16k_mono: bytes
    encoded_file: bytes
    def __init__(self, pcm_s16le_16k_mono: _Optional[bytes] = ..., encoded_file: _Optional[bytes] = ...) -> None: ...

class EngineInfo(_message.Message):
    __slots__ = ("name", "device", "fingerprint")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    name: str
    device: str
    fingerprint: str
    def __init__(self, name: _Optional[str] = ..., device: _Optional[str] = ..., fingerprint: _Optional[str] = ...) -> None: ...
