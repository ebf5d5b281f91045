from talkinghead.v1 import frames_pb2 as _frames_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SyncConfig(_message.Message):
    __slots__ = ("audio", "fps", "pass_through_faceless")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    PASS_THROUGH_FACELESS_FIELD_NUMBER: _ClassVar[int]
    audio: _frames_pb2.Audio
    fps: float
    pass_through_faceless: bool
    def __init__(self, audio: _Optional[_Union[_frames_pb2.Audio, _Mapping]] = ..., fps: _Optional[float] = ..., pass_through_faceless: _Optional[bool] = ...) -> None: ...

class SyncRequest(_message.Message):
    __slots__ = ("config", "frames")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    config: SyncConfig
    frames: _containers.RepeatedCompositeFieldContainer[_frames_pb2.Frame]
    def __init__(self, config: _Optional[_Union[SyncConfig, _Mapping]] = ..., frames: _Optional[_Iterable[_Union[_frames_pb2.Frame, _Mapping]]] = ...) -> None: ...

class SyncResponse(_message.Message):
    __slots__ = ("frames", "engine")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[_frames_pb2.Frame]
    engine: _frames_pb2.EngineInfo
    def __init__(self, frames: _Optional[_Iterable[_Union[_frames_pb2.Frame, _Mapping]]] = ..., engine: _Optional[_Union[_frames_pb2.EngineInfo, _Mapping]] = ...) -> None: ...
