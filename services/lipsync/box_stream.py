"""The official box smoothing, for frames that arrive one at a time.

``face_window.smooth_boxes`` needs the whole clip; a stream does not have it. This gives
exactly the same boxes with a look-ahead of ``window - 1`` frames: box i is the mean of
boxes i … i+4 while five remain, and the clip's tail is finished, quirks included, once
the stream ends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

import numpy as np

from talkinghead.services.lipsync.face_window import SMOOTHING_WINDOW

Item = TypeVar("Item")


class StreamingBoxSmoother(Generic[Item]):
    """push(item, box) → the items whose smoothed box is now known; finish() → the rest."""

    def __init__(self, window: int = SMOOTHING_WINDOW):
        self.window = window
        self._pending: deque[tuple[Item, np.ndarray]] = deque()  # original boxes
        self._history: deque[np.ndarray] = deque(maxlen=window - 1)  # last smoothed boxes

    def push(self, item: Item, box_x1y1x2y2) -> Iterator[tuple[Item, np.ndarray]]:
        self._pending.append((item, np.asarray(box_x1y1x2y2, dtype=np.int64)))
        while len(self._pending) >= self.window:
            rows = np.stack([b for _, b in list(self._pending)[: self.window]])
            item0, _ = self._pending.popleft()
            smoothed = np.mean(rows, axis=0).astype(np.int64)  # truncation, as the official
            self._history.append(smoothed)
            yield item0, smoothed

    def finish(self) -> Iterator[tuple[Item, np.ndarray]]:
        """The last (fewer than ``window``) items: each the mean of the last ``window`` rows
        as they stand, already smoothed ones included (Python slicing for short clips)."""
        items = [item for item, _ in self._pending]
        state = np.stack([*self._history, *(b for _, b in self._pending)]) if items else None
        first = len(self._history)
        for k, item in enumerate(items):
            # a negative start (clips shorter than the window) counts from the end, as upstream
            rows = state[len(state) - self.window:]
            state[first + k] = np.mean(rows, axis=0)
            yield item, state[first + k].copy()
        self._pending.clear()
