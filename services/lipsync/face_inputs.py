"""Wav2Lip's face input, made once per presenter frame and face box.

Every output frame lipsync receives is a frame of the presenter's motion clip (ping-pong
looped), carrying that frame's identity (``FaceGeometry.clip_key`` and ``clip_frame``). The
generator's face input (the face box cropped and resized to 96x96, stacked as the masked
copy and the reference, divided by 255) depends only on that frame's pixels and the
smoothed box: the same (motion frame, box) pair gives the same tensor. Box smoothing runs
over the output frames in their order, so one motion frame meets a few different smoothed
boxes (going forward, going back, at the loop's turns); each pair is made once per
replica and reused for every other output frame with it, in this video and the presenter's
next ones. Frames without a clip key are made each time. Bit for bit the official input.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import torch

from talkinghead.services.common.frames import VideoFrame

DEFAULT_MAX_BYTES = 256 << 20  # ~1,200 inputs of 6x96x96 float32: ten 125-frame clips


def face_input_key(frame: VideoFrame, coords_y1y2x1x2: Sequence[int]) -> tuple | None:
    """What the face input depends on: the motion frame (clip key, index), the frame's size
    and the crop box. None when the frame does not say its motion frame."""
    face = frame.face
    if face is None or not face.clip_key:
        return None
    return (face.clip_key, int(face.clip_frame), frame.height, frame.width,
            *(int(c) for c in coords_y1y2x1x2))


class FaceInputCache:
    """Thread-safe, byte-bounded LRU of face-input tensors (on the engine's device)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.made = 0  # inputs made (cropped, resized, stacked)
        self.reused = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def inputs(self, keys: list[tuple | None],
               make: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        """The stacked inputs [N, 6, S, S] for ``keys``: cached ones reused, the others made
        by ``make(positions)`` (one batch) and kept. Two streams missing the same key at once
        both make it (a few microseconds of work; no waiting)."""
        found: dict[int, torch.Tensor] = {}
        with self._lock:
            for j, key in enumerate(keys):
                entry = None if key is None else self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    found[j] = entry
        missing = [j for j in range(len(keys)) if j not in found]
        if missing:
            made = make(missing)
            with self._lock:
                self.made += len(missing)
                for j, tensor in zip(missing, made, strict=True):
                    found[j] = tensor
                    if keys[j] is not None:
                        self._put(keys[j], tensor)
        with self._lock:
            self.reused += len(keys) - len(missing)
        return torch.stack([found[j] for j in range(len(keys))])

    def _put(self, key: tuple, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.numel() * old.element_size()
        self._entries[key] = tensor
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.bytes -= dropped.numel() * dropped.element_size()


def crops_of(frames: Sequence[VideoFrame], coords: np.ndarray) -> np.ndarray:
    """The face crops (uint8 [N, 96, 96, 3], the frames' channel order)."""
    from talkinghead.services.lipsync import face_window as fw

    return np.stack([fw.crop_face(f.image, c) for f, c in zip(frames, coords, strict=True)])
