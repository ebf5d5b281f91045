"""Work made once per presenter frame, kept by a model server and reused.

Every output frame a lipsync or restore replica receives is made from one frame of the
presenter's motion clip (ping-pong looped) and says which (``FaceGeometry.clip_key`` and
``clip_frame``). Whatever an engine computes from that frame alone (Wav2Lip's face input,
MuseTalk's latents and jaw mask) is the same every time the frame comes round, in this video
and the presenter's next ones: an engine keeps it here, keyed on the motion frame plus what
else it depends on (the frame's size, a box), and makes only what is missing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from talkinghead.services.common.frames import VideoFrame


def presenter_key(frame: VideoFrame, parts: Sequence[int]) -> tuple | None:
    """The motion frame (clip key, index), the frame's size and ``parts`` (a box, say); None
    when the frame does not say which motion frame it is (made every time)."""
    face = frame.face
    if face is None or not face.clip_key:
        return None
    return (face.clip_key, int(face.clip_frame), frame.height, frame.width,
            *(int(v) for v in parts))


class PresenterCache:
    """Thread-safe, byte-bounded LRU (least recently used dropped first) of entries with an
    ``nbytes`` (tensors, arrays, dataclasses that sum theirs), counting what it made and
    what it reused."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.made = 0
        self.reused = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def entries(self, keys: list[tuple | None], make: Callable[[list[int]], list]) -> list:
        """The entries for ``keys``: cached ones reused, the others made by
        ``make(positions)`` in one batch and kept. A key twice in one batch is made once;
        two streams missing the same key at once both make it (no waiting: the same
        values, and the work is small next to what waiting would hold up)."""
        found: dict[int, Any] = {}
        with self._lock:
            for j, key in enumerate(keys):
                entry = None if key is None else self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    found[j] = entry
        missing = [j for j in range(len(keys)) if j not in found]
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

    def _put(self, key: tuple, entry: Any) -> None:
        size = int(entry.nbytes)
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= int(old.nbytes)
        self._entries[key] = entry
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.bytes -= int(dropped.nbytes)
