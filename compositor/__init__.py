"""Compositor: talking-head frames -> 1920x1080 TV-news frames -> H.264/AAC MP4.

NewsScene says what the frame shows, NewsLayout where it goes; NewsFrameRenderer draws
the static graphics once and composites each head frame cheaply; VideoEncoder pipes the
frames through ffmpeg into an MP4 that appears atomically; probe() checks the result.
"""

from .encode import EncodeError, OutputPathError, VideoEncoder, remove_abandoned_temp_files
from .news_frame import NewsFrameRenderer
from .probe import MediaInfo, ProbeError, probe
from .scene import NewsLayout, NewsScene

__all__ = [
    "EncodeError",
    "MediaInfo",
    "NewsFrameRenderer",
    "NewsLayout",
    "NewsScene",
    "OutputPathError",
    "ProbeError",
    "VideoEncoder",
    "probe",
    "remove_abandoned_temp_files",
]
