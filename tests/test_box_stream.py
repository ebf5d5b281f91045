"""Streaming smoothing gives exactly the official whole-clip boxes, for every clip length."""

from __future__ import annotations

import numpy as np
import pytest

from talkinghead.services.lipsync.box_stream import StreamingBoxSmoother
from talkinghead.services.lipsync.face_window import smooth_boxes


@pytest.mark.parametrize("n", list(range(1, 13)) + [37])
def test_streaming_equals_whole_clip(n):
    rng = np.random.default_rng(n)
    boxes = rng.integers(0, 400, size=(n, 4))
    smoother = StreamingBoxSmoother()
    out = []
    for i, box in enumerate(boxes):
        out.extend(smoother.push(i, box))
    out.extend(smoother.finish())
    assert [i for i, _ in out] == list(range(n))
    np.testing.assert_array_equal(np.stack([b for _, b in out]), smooth_boxes(boxes))
