"""MuseTalk's face box from our geometry (five points), checked on the pack's 68 landmarks,
and its behaviour at the frame's edges."""

from __future__ import annotations

import numpy as np
import pytest

from talkinghead.services.common.face_detection import largest_face
from talkinghead.services.common.frames import FaceGeometry
from talkinghead.services.lipsync import musetalk_face as mf
from tests.reference_pack import fixture


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.reference
def test_box_from_five_points_on_the_pack_landmarks():
    """From the five points alone, near upstream's 68-landmark box: the nose bridge (its
    centre line) within 3 % of the box's height, the chin within 15 %, width within 10 %,
    horizontal centre within 5 %, overlap ≥ 0.7 (0.77 on the published face)."""
    data = fixture("musetalk/frame_e2e.npz")
    landmarks = data["landmarks68_injected"]
    upstream = mf.box_from_landmarks68(landmarks)
    assert upstream == tuple(int(v) for v in data["bbox_x1y1x2y2"])
    ours = mf.box_from_five_points(mf.five_points_from_68(landmarks))
    # compared before clamping at the frame's top, which either box may meet
    points = landmarks.astype(np.int32)
    bridge, chin = int(points[mf.NOSE_BRIDGE, 1]), int(points[:, 1].max())
    height, width = 2 * (chin - bridge), upstream[2] - upstream[0]
    five = mf.five_points_from_68(landmarks).astype(np.float64)
    eyes_y, nose_y = five[:2, 1].mean(), five[2, 1]
    our_bridge = eyes_y + mf.BRIDGE_FRACTION * (nose_y - eyes_y)
    assert abs(our_bridge - bridge) <= 0.03 * height
    assert abs(ours[3] - chin) <= 0.15 * height
    assert abs((ours[2] - ours[0]) - width) <= 0.10 * width
    assert abs((ours[0] + ours[2]) / 2 - (upstream[0] + upstream[2]) / 2) <= 0.05 * width
    if upstream[1] > 0 and ours[1] > 0:
        assert iou(ours, upstream) >= 0.7
    # the margin, then the frame's height, as upstream
    frame_height = data["frame_bgr"].shape[0]
    assert mf.add_margin(upstream, frame_height) == tuple(int(v) for v in data["bbox_with_margin_x1y1x2y2"])


def test_box_from_geometry_on_the_demo_photo(photo):
    """The motion stage's geometry of the demo photo gives a box holding every landmark,
    ending below the mouth and inside the frame."""
    face = largest_face(photo)
    box = mf.box_from_geometry(face, *photo.shape[:2])
    assert box is not None
    x1, y1, x2, y2 = box
    points = face.landmarks
    assert (points[:, 0] > x1).all() and (points[:, 0] < x2).all()
    assert (points[:, 1] > y1).all() and (points[:, 1] < y2).all()
    assert y2 > points[3:, 1].max() + 0.5 * (points[3:, 1].mean() - points[2, 1])
    assert 0 <= x1 < x2 <= photo.shape[1] and 0 <= y1 < y2 <= photo.shape[0]


def test_box_from_geometry_at_the_edges():
    points = np.array([[20, 100], [60, 100], [40, 130], [25, 160], [55, 160]], np.float32)
    face = FaceGeometry(box=(0, 80, 80, 180), landmarks=points)
    x1, y1, x2, y2 = mf.box_from_geometry(face, 190, 300)
    assert x1 == 0 and y2 == 190  # clamped on the left and at the bottom (margin cut)
    gone = FaceGeometry(box=(0, 0, 1, 1), landmarks=points - 500)
    assert mf.box_from_geometry(gone, 190, 300) is None
    assert mf.box_from_geometry(FaceGeometry(box=(0, 0, 80, 80)), 190, 300) is None  # no points
