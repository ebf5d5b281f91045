"""Wav2Lip's face input, made once per presenter frame and face box.

Every output frame lipsync receives is a frame of the presenter's motion clip (ping-pong
looped), carrying that frame's identity (``FaceGeometry.clip_key`` and ``clip_frame``). The
generator's face input (the face box cropped and resized to 96x96, stacked as the masked
copy and the reference, divided by 255) depends only on that frame's pixels and the
smoothed box: the same (motion frame, box) pair gives the same tensor. Box smoothing runs
over the output frames in their order, so one motion frame meets a few different smoothed
boxes (going forward, going back, at the loop's turns); each pair is made once per
replica and reused for every other output frame with it, in this video and the presenter's
next ones (services/common/presenter_cache.py keeps them). Frames without a clip key are
made each time. Bit for bit the official input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.common.presenter_cache import presenter_key

DEFAULT_MAX_BYTES = 256 << 20  # ~1,200 inputs of 6x96x96 float32: ten 125-frame clips


def face_input_key(frame: VideoFrame, coords_y1y2x1x2: Sequence[int]) -> tuple | None:
    """What the face input depends on: the motion frame, the frame's size and the crop box
    (None when the frame does not say its motion frame)."""
    return presenter_key(frame, coords_y1y2x1x2)


def crops_of(frames: Sequence[VideoFrame], coords: np.ndarray) -> np.ndarray:
    """The face crops (uint8 [N, 96, 96, 3], the frames' channel order)."""
    from talkinghead.services.lipsync import face_window as fw

    return np.stack([fw.crop_face(f.image, c) for f, c in zip(frames, coords, strict=True)])
