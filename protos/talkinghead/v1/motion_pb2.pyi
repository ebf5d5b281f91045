from talkinghead.v1 import frames_pb2 as _frames_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MotionOptions(_message.Message):
    __slots__ = ("fps", "max_side", "relative_motion", "expression_multiplier", "stitching", "eye_retargeting", "lip_retargeting", "animation_region", "driving_option", "driving_multiplier", "normalize_lip")
    FPS_FIELD_NUMBER: _ClassVar[int]
    MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_MOTION_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    STITCHING_FIELD_NUMBER: _ClassVar[int]
    EYE_RETARGETING_FIELD_NUMBER: _ClassVar[int]
    LIP_RETARGETING_FIELD_NUMBER: _ClassVar[int]
    ANIMATION_REGION_FIELD_NUMBER: _ClassVar[int]
    DRIVING_OPTION_FIELD_NUMBER: _ClassVar[int]
    DRIVING_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_LIP_FIELD_NUMBER: _ClassVar[int]
    fps: float
    max_side: int
    relative_motion: bool
    expression_multiplier: float
    stitching: bool
    eye_retargeting: bool
    lip_retargeting: bool
    animation_region: str
    driving_option: str
    driving_multiplier: float
    normalize_lip: bool
    def __init__(self, fps: _Optional[float] = ..., max_side: _Optional[int] = ..., relative_motion: _Optional[bool] = ..., expression_multiplier: _Optional[float] = ..., stitching: _Optional[bool] = ..., eye_retargeting: _Optional[bool] = ..., lip_retargeting: _Optional[bool] = ..., animation_region: _Optional[str] = ..., driving_option: _Optional[str] = ..., driving_multiplier: _Optional[float] = ..., normalize_lip: _Optional[bool] = ...) -> None: ...

class AnimateRequest(_message.Message):
    __slots__ = ("image", "template_name", "template_npz", "options", "chunk_frames")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_NAME_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_NPZ_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FRAMES_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    template_name: str
    template_npz: bytes
    options: MotionOptions
    chunk_frames: int
    def __init__(self, image: _Optional[bytes] = ..., template_name: _Optional[str] = ..., template_npz: _Optional[bytes] = ..., options: _Optional[_Union[MotionOptions, _Mapping]] = ..., chunk_frames: _Optional[int] = ...) -> None: ...

class AnimateResponse(_message.Message):
    __slots__ = ("total_frames", "fps", "frames", "engine", "report")
    TOTAL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    total_frames: int
    fps: float
    frames: _containers.RepeatedCompositeFieldContainer[_frames_pb2.Frame]
    engine: _frames_pb2.EngineInfo
    report: MotionReport
    def __init__(self, total_frames: _Optional[int] = ..., fps: _Optional[float] = ..., frames: _Optional[_Iterable[_Union[_frames_pb2.Frame, _Mapping]]] = ..., engine: _Optional[_Union[_frames_pb2.EngineInfo, _Mapping]] = ..., report: _Optional[_Union[MotionReport, _Mapping]] = ...) -> None: ...

class MotionReport(_message.Message):
    __slots__ = ("motion_multiplier", "lip_normalized", "notes")
    MOTION_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    LIP_NORMALIZED_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    motion_multiplier: float
    lip_normalized: bool
    notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, motion_multiplier: _Optional[float] = ..., lip_normalized: _Optional[bool] = ..., notes: _Optional[_Iterable[str]] = ...) -> None: ...

class ListTemplatesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TemplateInfo(_message.Message):
    __slots__ = ("name", "frames", "fps")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    name: str
    frames: int
    fps: float
    def __init__(self, name: _Optional[str] = ..., frames: _Optional[int] = ..., fps: _Optional[float] = ...) -> None: ...

class ListTemplatesResponse(_message.Message):
    __slots__ = ("templates",)
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    templates: _containers.RepeatedCompositeFieldContainer[TemplateInfo]
    def __init__(self, templates: _Optional[_Iterable[_Union[TemplateInfo, _Mapping]]] = ...) -> None: ...

class GetEngineInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetEngineInfoResponse(_message.Message):
    __slots__ = ("engine",)
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    engine: _frames_pb2.EngineInfo
    def __init__(self, engine: _Optional[_Union[_frames_pb2.EngineInfo, _Mapping]] = ...) -> None: ...
