"""The presenter paste-back masks: one per motion-clip frame, kept by a restore replica.

Every output frame is made from one frame of the presenter's motion clip (ping-pong looped)
and keeps that frame's face geometry: lipsync redraws the mouth, not the face's place. The
official paste-back parses every restored face (ParseNet, ~470 GFLOPs), blurs the classes
twice with a 101 px kernel in float64 and warps the mask back into the frame. In presenter
mode the mask is made once per (clip key, clip frame) — from the restored face of the first
output frame this replica restores from that motion frame — and reused for every other
output frame made from it, in this video and the presenter's next ones.

The cache is bounded in bytes (least recently used dropped first) and shared by the
replica's concurrent streams: a mask being made by one stream is waited for by the others,
never made twice.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from talkinghead.services.common.frames import VideoFrame

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: ~350 motion frames of a 1024 px face region, float64
WAIT_SECONDS = 300.0  # longest wait for another stream's mask before making it here


@dataclass(frozen=True)
class PasteMask:
    """A soft mask in frame coordinates, kept only where it can be non-zero."""

    region: tuple[int, int, int, int]  # y0, y1, x0, x1 (paste_face's face_region)
    mask: np.ndarray  # float64 [y1 - y0, x1 - x0]

    @property
    def nbytes(self) -> int:
        return int(self.mask.nbytes)


def mask_key(frame: VideoFrame, landmarks: np.ndarray) -> tuple | None:
    """What a mask depends on beside the parser: the motion frame (clip key, frame index),
    the frame's size and the landmarks it is aligned on (a digest: a wrong clip identity
    never gives another face's mask). None when the frame does not say its motion frame."""
    face = frame.face
    if face is None or not face.clip_key:
        return None
    digest = hashlib.blake2b(np.ascontiguousarray(landmarks, np.float64).tobytes(),
                             digest_size=8).hexdigest()
    return (face.clip_key, int(face.clip_frame), frame.height, frame.width, digest)


class PasteMaskCache:
    """Thread-safe, byte-bounded LRU of ``PasteMask`` by ``mask_key``, with claims so that a
    mask is made by one stream while the others wait for it."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, PasteMask] = OrderedDict()
        self._pending: dict[tuple, threading.Event] = {}
        self._lock = threading.Lock()
        self.bytes = 0
        self.made = 0  # masks stored (each made once: the parser ran for it)
        self.hits = 0
        self.evicted = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def claim(self, key: tuple) -> tuple[PasteMask | None, threading.Event | None]:
        """(mask, None) when cached; (None, None) when the caller now makes it (and must
        ``put`` or ``release`` it); (None, event) when another stream is making it."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry, None
            event = self._pending.get(key)
            if event is not None:
                return None, event
            self._pending[key] = threading.Event()
            return None, None

    def get(self, key: tuple) -> PasteMask | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
            return entry

    def put(self, key: tuple, entry: PasteMask) -> None:
        """Store the mask the caller claimed, drop the least recently used beyond the
        budget (a mask larger than the whole budget is not kept), wake the waiters."""
        with self._lock:
            self.made += 1
            if entry.nbytes <= self.max_bytes:
                old = self._entries.pop(key, None)
                if old is not None:
                    self.bytes -= old.nbytes
                self._entries[key] = entry
                self.bytes += entry.nbytes
                while self.bytes > self.max_bytes:
                    _, dropped = self._entries.popitem(last=False)
                    self.bytes -= dropped.nbytes
                    self.evicted += 1
            event = self._pending.pop(key, None)
        if event is not None:
            event.set()

    def release(self, key: tuple) -> None:
        """Give up a claim without a mask (an error): the waiters make it themselves."""
        with self._lock:
            event = self._pending.pop(key, None)
        if event is not None:
            event.set()
