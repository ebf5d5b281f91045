"""The lite motion engine on the demo portrait with the bundled and synthetic templates."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from talkinghead.services.common.errors import NoFaceError
from talkinghead.services.common.face_detection import largest_face
from talkinghead.services.motion.lite_engine import LiteMotionEngine
from talkinghead.services.motion.options import MotionOptions
from talkinghead.services.motion.template import (
    MotionTemplate,
    load_template,
    rotation_to_euler_degrees,
)


@pytest.fixture(scope="module")
def engine() -> LiteMotionEngine:
    engine = LiteMotionEngine()
    engine.warmup()
    return engine


@pytest.fixture(scope="module")
def talking_frames(engine, photo):
    template = load_template("talking").resample(25.0)
    return template, list(engine.animate(photo, template, MotionOptions()))


def synthetic_template(n: int, roll: float = 0.0, t: tuple = (0.0, 0.0), zoom: float = 1.0):
    """Frame 0 at rest, frames 1.. at the given pose (roll in degrees, t in keypoint units)."""
    a = np.radians(roll)
    Rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    R = np.repeat(np.eye(3)[None], n, axis=0).astype(np.float32)
    R[1:] = Rz.T  # LivePortrait stores R = (Rz Ry Rx)^T
    scale = np.ones((n, 1), np.float32)
    scale[1:] = zoom
    shift = np.zeros((n, 3), np.float32)
    shift[1:, :2] = t
    return MotionTemplate("synthetic", scale, R, np.zeros((n, 21, 3), np.float32), shift, 25.0)


def test_engine_identity():
    engine = LiteMotionEngine()
    assert (engine.name, engine.device, engine.fingerprint) == ("lite", "cpu", "lite-motion-1")


def test_prepare_finds_face_and_rejects_blank(engine, photo):
    face = engine.prepare(photo)
    assert abs(face.center[0] - 224) < 8 and abs(face.center[1] - 113) < 8
    with pytest.raises(NoFaceError, match="no face found in the photo"):
        engine.prepare(np.full((256, 256, 3), 90, np.uint8))
    with pytest.raises(NoFaceError):  # at the call, before any frame is asked for
        engine.animate(np.full((256, 256, 3), 90, np.uint8), synthetic_template(3), MotionOptions())


def test_yields_one_frame_per_template_frame(talking_frames, photo):
    template, frames = talking_frames
    assert len(frames) == template.n_frames == 125
    assert [f.index for f in frames] == list(range(template.n_frames))
    for f in frames:
        assert f.image.shape == photo.shape and f.image.dtype == np.uint8
        assert f.face is not None and f.face.landmarks.shape == (5, 2)


def test_first_frame_is_the_photo_and_later_frames_move(talking_frames, photo):
    template, frames = talking_frames
    assert np.array_equal(frames[0].image, photo)
    diffs = [np.abs(f.image.astype(int) - photo).mean() for f in frames]
    roll = [abs(rotation_to_euler_degrees(r @ template.R[0].T)[2]) for r in template.R]
    moving = int(np.argmax(roll))
    assert diffs[moving] > 1.0
    assert len({round(d, 3) for d in diffs}) > 50  # changes from frame to frame


def test_background_far_from_face_is_untouched(talking_frames, photo):
    _, frames = talking_frames
    corners = (slice(None, 40), slice(-40, None))
    for f in frames:
        for ys in corners:
            for xs in corners:
                assert np.array_equal(f.image[ys, xs], photo[ys, xs])
    # The lower half of the image (torso) stays as well.
    assert all(np.array_equal(f.image[420:], photo[420:]) for f in frames)


def test_face_geometry_follows_the_warp(engine, photo):
    template = synthetic_template(2, t=(0.12, -0.06))
    frames = list(engine.animate(photo, template, MotionOptions()))
    moved = frames[1].face
    start = frames[0].face
    dx = moved.center[0] - start.center[0]
    dy = moved.center[1] - start.center[1]
    assert dx > 8 and dy < -4  # right and up, in proportion to the face size
    found = largest_face(frames[1].image)
    assert found is not None
    assert abs(found.center[0] - moved.center[0]) < 4
    assert abs(found.center[1] - moved.center[1]) < 4
    assert np.allclose(moved.landmarks - start.landmarks, [dx, dy], atol=0.01)


def test_positive_roll_turns_the_head_clockwise_on_screen(engine, photo):
    face = engine.prepare(photo)
    cx, cy = face.center
    marked = photo.copy()
    top = (int(cx), int(cy - 0.45 * face.width))  # on the forehead, above the face centre
    cv2.circle(marked, top, 3, (0, 255, 0), -1)
    frames = list(engine.animate(marked, synthetic_template(2, roll=10.0), MotionOptions()))

    def marker(image):
        green = (image[..., 1] > 200) & (image[..., 0] < 80) & (image[..., 2] < 80)
        ys, xs = np.nonzero(green)
        return xs.mean(), ys.mean()

    x0, y0 = marker(frames[0].image)
    x1, _ = marker(frames[1].image)
    radius = cy - y0
    assert x1 - x0 == pytest.approx(radius * np.sin(np.radians(10.0)), abs=1.5)  # moved right
    left_eye, right_eye = frames[1].face.landmarks[:2]
    assert right_eye[1] > left_eye[1] + 3  # the eye line now falls to the right


def test_zoom_enlarges_the_face(engine, photo):
    """Scale is part of region "all" only (as upstream)."""
    frames = list(engine.animate(photo, synthetic_template(2, zoom=1.1),
                                 MotionOptions(animation_region="all")))
    assert frames[1].face.width == pytest.approx(frames[0].face.width * 1.1, rel=1e-3)


@pytest.mark.parametrize(("region", "moves", "zooms"), [
    ("all", True, True), ("pose", True, False), ("pose+eyes", True, False),
    ("exp", False, False), ("lip", False, False), ("eyes", False, False)])
def test_regions_that_concern_pose(engine, photo, region, moves, zooms):
    """Rotation and translation follow the template in all, pose and pose+eyes; scale in all
    only; the expression-only regions keep the head where it is."""
    template = synthetic_template(2, roll=8.0, t=(0.05, 0.0), zoom=1.1)
    frames = list(engine.animate(photo, template, MotionOptions(animation_region=region)))
    still = np.array_equal(frames[1].image, photo)
    assert still != moves
    ratio = frames[1].face.width / frames[0].face.width
    if zooms:
        assert ratio > 1.05
    elif moves:  # roll alone leaves the axis-aligned box about as wide (cos 8° foreshortening none)
        assert ratio < 1.05


def test_driving_multiplier_scales_the_pose_change(engine, photo):
    template = synthetic_template(2, t=(0.05, 0.0))
    once, twice = (list(engine.animate(photo, template, MotionOptions(driving_multiplier=m)))
                   for m in (1.0, 2.0))
    shift = [f[1].face.center[0] - f[0].face.center[0] for f in (once, twice)]
    assert shift[0] > 1 and shift[1] == pytest.approx(2 * shift[0], rel=1e-3)
    zero = list(engine.animate(photo, template, MotionOptions(driving_multiplier=0.0)))
    assert np.array_equal(zero[1].image, photo)


def test_lip_normalisation_is_reported_not_applied(engine, photo):
    from talkinghead.services.motion.options import MotionReport

    report = MotionReport()
    list(engine.animate(photo, synthetic_template(2), MotionOptions(normalize_lip=True), report))
    assert any("lip normalisation not applied" in n for n in report.notes)
    assert not report.lip_normalized


def test_absolute_rotation_differs_from_relative(engine, photo):
    template = load_template("talking").resample(25.0)
    short = MotionTemplate(
        template.name, template.scale[:5], template.R[:5], template.exp[:5], template.t[:5], template.fps
    )
    rel = list(engine.animate(photo, short, MotionOptions(relative_motion=True)))
    absolute = list(engine.animate(photo, short, MotionOptions(relative_motion=False)))
    assert np.array_equal(rel[0].image, photo)
    assert not np.array_equal(absolute[0].image, photo)  # the template's own first pose
