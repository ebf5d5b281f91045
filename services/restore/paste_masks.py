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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from talkinghead.services.common.frames import VideoFrame

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: ~350 motion frames of a 1024 px face region, float64
WAIT_SECONDS = 300.0  # longest wait for another stream's mask before making it here


@dataclass(frozen=True)
class PasteMask:
    """A soft mask. The host path keeps it in frame coordinates, only where it can be
    non-zero (``region``: its warp is paid once); the device path keeps it in face
    coordinates on the device (``region`` None: warped with the face at each paste, a
    batched gather there, and 2 MiB per mask)."""

    region: tuple[int, int, int, int] | None  # y0, y1, x0, x1 (paste_face's face_region)
    mask: Any  # float64 [y1 - y0, x1 - x0] ndarray, or a [S, S] tensor on the device

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


def masks_through_cache(cache: PasteMaskCache | None, keys: list[tuple | None],
                        make: Callable[[list[int]], list[PasteMask]]) -> list[PasteMask]:
    """The mask of every face of a batch: from ``cache`` where this replica made it before,
    else made by ``make(positions)`` (the parser, for the faces at those positions of the
    batch) and kept. A face whose key is None (no motion-frame identity, or no cache: the
    exact mode) is always made. A mask another stream is making is waited for; one made
    earlier in this batch is reused; one whose maker failed is made here."""
    from talkinghead.services.common.metrics import PASTE_MASK_REUSES

    masks: list[PasteMask | None] = [None] * len(keys)
    to_make: list[int] = []
    claimed: dict[tuple, int] = {}  # key claimed by this call -> the face making it
    later: list[tuple[int, tuple, threading.Event | None]] = []
    for j, key in enumerate(keys):
        if key is None or cache is None:
            to_make.append(j)
        elif key in claimed:
            later.append((j, key, None))
        else:
            entry, event = cache.claim(key)
            if entry is not None:
                masks[j] = entry
                PASTE_MASK_REUSES.inc()
            elif event is None:
                claimed[key] = j
                to_make.append(j)
            else:
                later.append((j, key, event))
    owner = {j: key for key, j in claimed.items()}
    try:
        if to_make:
            for j, mask in zip(to_make, make(to_make), strict=True):
                masks[j] = mask
                if j in owner:
                    cache.put(owner.pop(j), mask)
    finally:
        for key in owner.values():  # claims left by an error: the waiters make them
            cache.release(key)
    for j, key, event in later:
        if event is not None:
            event.wait(WAIT_SECONDS)
            entry = cache.get(key)
        else:  # made by this call, earlier in the batch (may be evicted already)
            entry = masks[claimed[key]]
        if entry is None:  # the other stream failed, or its mask was evicted at once
            entry = make([j])[0]
        else:
            PASTE_MASK_REUSES.inc()
        masks[j] = entry
    return masks  # type: ignore[return-value]
