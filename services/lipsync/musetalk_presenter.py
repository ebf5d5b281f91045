"""What MuseTalk needs from one presenter frame, made once and reused.

Every output frame lipsync receives is a frame of the presenter's motion clip (ping-pong
looped), carrying that frame's identity (``FaceGeometry.clip_key`` and ``clip_frame``). Of
MuseTalk's work per output frame, the two VAE encodes (the crop with its lower half blanked,
and the reference crop: 2 x 273 GFLOPs) and the face parser's jaw mask (28 GFLOPs, plus the
blur) depend only on that frame's pixels and its box, never on the audio; only the UNet
(178), the decode (622) and the blend do. So the latents and the blend material are kept per
(motion frame, frame size, box) on this replica and reused for every other output frame made
from it, in this video and the presenter's next ones. Frames without a clip key are made
each time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.lipsync.musetalk_blend import BlendMaterial

DEFAULT_MAX_BYTES = 256 << 20  # ~1,300 frames at a 400 px crop box: ten 125-frame clips


@dataclass(frozen=True)
class PresenterFrame:
    latents: torch.Tensor  # [8, 32, 32] scaled latents, masked first (on the engine's device)
    material: BlendMaterial

    @property
    def nbytes(self) -> int:
        return self.latents.numel() * self.latents.element_size() + self.material.mask.nbytes


def presenter_key(frame: VideoFrame, box: Sequence[int]) -> tuple | None:
    """What the entry depends on: the motion frame, the frame's size and the box; None when
    the frame does not say which motion frame it is."""
    face = frame.face
    if face is None or not face.clip_key:
        return None
    return (face.clip_key, int(face.clip_frame), frame.height, frame.width, *(int(v) for v in box))


class PresenterCache:
    """Thread-safe, byte-bounded LRU of :class:`PresenterFrame` (least recently used
    dropped first), counting what it made and what it reused."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, PresenterFrame] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.made = 0
        self.reused = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def frames(self, keys: list[tuple | None],
               make: Callable[[list[int]], list[PresenterFrame]]) -> list[PresenterFrame]:
        """The entries for ``keys``: cached ones reused, the others made by
        ``make(positions)`` in one batch and kept. Two streams missing the same key at once
        both make it (no waiting; the same values)."""
        found: dict[int, PresenterFrame] = {}
        with self._lock:
            for j, key in enumerate(keys):
                entry = None if key is None else self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    found[j] = entry
        missing = [j for j in range(len(keys)) if j not in found]
        # the same key twice in one batch is made once
        first: dict[tuple, int] = {}
        to_make = []
        for j in missing:
            key = keys[j]
            if key is not None and key in first:
                continue
            if key is not None:
                first[key] = j
            to_make.append(j)
        if to_make:
            made = make(to_make)
            with self._lock:
                self.made += len(to_make)
                for j, entry in zip(to_make, made, strict=True):
                    found[j] = entry
                    if keys[j] is not None:
                        self._put(keys[j], entry)
        for j in missing:
            if j not in found:
                found[j] = found[first[keys[j]]]
        with self._lock:
            self.reused += len(keys) - len(to_make)
        return [found[j] for j in range(len(keys))]

    def _put(self, key: tuple, entry: PresenterFrame) -> None:
        size = entry.nbytes
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.nbytes
        self._entries[key] = entry
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.bytes -= dropped.nbytes
