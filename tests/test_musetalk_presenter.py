"""The presenter cache (services/common/presenter_cache.py) with MuseTalk's entries: keys,
reuse, one make per key in a batch, and its memory bound (least recently used first)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.services.common.frames import FaceGeometry, VideoFrame
from talkinghead.services.common.presenter_cache import PresenterCache, presenter_key
from talkinghead.services.lipsync.musetalk_blend import BlendMaterial
from talkinghead.services.lipsync.musetalk_presenter import PresenterFrame

BOX = (10, 20, 110, 140)


def entry(value: float) -> PresenterFrame:
    mask = np.zeros((100, 100), np.uint8)
    return PresenterFrame(torch.full((8, 32, 32), value), BlendMaterial(BOX, (0, 0, 100, 100), mask))


def frame(clip_frame: int, key: str = "clip") -> VideoFrame:
    face = FaceGeometry(box=(0, 0, 1, 1), clip_key=key, clip_frame=clip_frame)
    return VideoFrame(0, np.zeros((200, 300, 3), np.uint8), face)


def test_keys():
    assert presenter_key(frame(3), BOX) == ("clip", 3, 200, 300, *BOX)
    assert presenter_key(frame(3, key=""), BOX) is None
    assert presenter_key(VideoFrame(0, np.zeros((4, 4, 3), np.uint8)), BOX) is None


def test_made_once_reused_after_and_within_a_batch():
    cache = PresenterCache(1 << 30)
    calls: list[list[int]] = []

    def make(js):
        calls.append(js)
        return [entry(float(j)) for j in js]

    keys = [presenter_key(frame(i), BOX) for i in (0, 1, 0)]
    got = cache.entries(keys, make)
    assert calls == [[0, 1]] and got[2] is got[0]
    again = cache.entries([presenter_key(frame(1), BOX), None], make)
    assert calls == [[0, 1], [1]]  # the unlabelled frame is made, the known one reused
    assert again[0] is got[1]
    assert (cache.made, cache.reused) == (3, 2)


def test_memory_bound_drops_the_least_recently_used():
    size = entry(0).nbytes
    cache = PresenterCache(max_bytes=2 * size)
    keys = [presenter_key(frame(i), BOX) for i in range(3)]
    cache.entries(keys[:2], lambda js: [entry(j) for j in js])
    cache.entries(keys[:1], lambda js: pytest.fail("cached"))  # 0 now most recent
    cache.entries(keys[2:], lambda js: [entry(2) for _ in js])
    assert len(cache) == 2 and cache.bytes == 2 * size
    made = []
    cache.entries(keys[1:2], lambda js: made.append(js) or [entry(1)])
    assert made == [[0]]  # frame 1 was the one dropped
    with pytest.raises(ValueError):
        PresenterCache(-1)
