"""Haar face detection on the demo portrait: box, landmark layout, misses, threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from talkinghead.services.common.errors import InputError
from talkinghead.services.common.face_detection import (
    detect_faces,
    landmarks_from_box,
    landmarks_from_eyes,
    largest_face,
)

# Where frontalface_default finds the demo face (x, y, w, h), and two hand-measured points.
DEMO_BOX = (178, 67, 92, 92)
DEMO_EYES = np.array([[203, 102], [246, 102]], np.float32)


def _box_xywh(face) -> np.ndarray:
    return np.array([face.box[0], face.box[1], face.width, face.height])


def test_finds_demo_face_near_known_box(photo):
    faces = detect_faces(photo)
    assert len(faces) == 1
    assert np.all(np.abs(_box_xywh(faces[0]) - DEMO_BOX) <= 6)


def test_landmarks_are_laid_out_like_a_face(photo):
    face = largest_face(photo)
    assert face is not None
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    eye_y = (left_eye[1] + right_eye[1]) / 2
    mouth_y = (mouth_left[1] + mouth_right[1]) / 2
    assert eye_y < nose[1] < mouth_y
    x0, y0, x1, y1 = face.box
    assert np.all((face.landmarks[:, 0] > x0) & (face.landmarks[:, 0] < x1))
    assert np.all((face.landmarks[:, 1] > y0) & (face.landmarks[:, 1] < y1))
    # Eye-refined landmarks land within a few pixels of the real eyes.
    assert np.all(np.abs(face.landmarks[:2] - DEMO_EYES) <= 5)


def test_blank_and_noise_images_have_no_face():
    assert detect_faces(np.full((240, 320, 3), 128, np.uint8)) == []
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert largest_face(noise) is None


def test_large_image_is_found_at_the_same_place(photo):
    big = cv2.resize(photo, (1536, 1536), interpolation=cv2.INTER_CUBIC)
    face = largest_face(big)
    assert face is not None
    assert np.all(np.abs(_box_xywh(face) / 3.0 - DEMO_BOX) <= 6)


def test_two_faces_largest_first(photo):
    small = cv2.resize(photo, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    canvas = np.full((512, 512 + small.shape[1], 3), 200, np.uint8)
    canvas[:, :512] = photo
    canvas[: small.shape[0], 512:] = small
    faces = detect_faces(canvas)
    assert len(faces) == 2
    assert faces[0].width > faces[1].width
    assert faces[0].center[0] < 512 < faces[1].center[0]


def test_accepts_gray_and_rgba_and_rejects_the_rest(photo):
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    for image in (gray, rgba):
        face = largest_face(image)
        assert face is not None and abs(face.box[0] - DEMO_BOX[0]) <= 6
    with pytest.raises(InputError):
        detect_faces(photo.astype(np.float32))
    with pytest.raises(InputError):
        detect_faces(np.zeros((10, 10, 2), np.uint8))


def test_concurrent_detection_agrees(photo):
    with ThreadPoolExecutor(max_workers=4) as pool:
        boxes = list(pool.map(lambda _: largest_face(photo).box, range(8)))
    assert all(box == boxes[0] for box in boxes)


def test_landmark_estimates_follow_box_and_eye_tilt():
    box_points = landmarks_from_box((100.0, 50.0, 200.0, 150.0))
    assert np.allclose(box_points[2], [150.0, 112.0])  # nose on the centre line
    level = landmarks_from_eyes(np.array([100.0, 100.0]), np.array([140.0, 100.0]))
    assert np.allclose(level[2], [120.0, 124.0])  # nose straight below the eyes' midpoint
    # Eyes tilted clockwise on screen: the mouth swings to the left of the midline.
    tilted = landmarks_from_eyes(np.array([100.0, 100.0]), np.array([140.0, 110.0]))
    assert tilted[3:].mean(axis=0)[0] < 120.0
