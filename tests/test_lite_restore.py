"""The lite restore engine: sharper face, untouched surroundings, weight, faceless frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from talkinghead.services.common.errors import InputError
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.restore.lite_engine import LiteRestoreEngine


@pytest.fixture(scope="module")
def engine() -> LiteRestoreEngine:
    engine = LiteRestoreEngine()
    engine.warmup()
    return engine


def sharpness(image: np.ndarray, face) -> float:
    """Variance of the Laplacian inside the face box."""
    x0, y0, x1, y1 = (int(v) for v in face.box)
    gray = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def far_from(face, shape) -> np.ndarray:
    """Pixels more than a face width outside the face box."""
    x0, y0, x1, y1 = face.box
    w = face.width
    mask = np.ones(shape[:2], bool)
    mask[max(0, int(y0 - w)) : int(y1 + w), max(0, int(x0 - w)) : int(x1 + w)] = False
    return mask


def test_engine_identity():
    engine = LiteRestoreEngine()
    assert (engine.name, engine.device, engine.fingerprint) == ("lite", "cpu", "lite-restore-1")


def test_face_gets_sharper_and_surroundings_stay(engine, photo, face):
    frames = [VideoFrame(index=7, image=photo, face=face)]
    out = engine.restore(frames, weight=0.5)
    assert len(out) == 1 and out[0].index == 7 and out[0].face is face
    assert sharpness(out[0].image, face) > 1.2 * sharpness(photo, face)
    far = far_from(face, photo.shape)
    assert np.array_equal(out[0].image[far], photo[far])
    assert not np.array_equal(out[0].image, photo)


def test_weight_scales_the_effect(engine, photo, face):
    frames = [VideoFrame(index=0, image=photo, face=face)]
    zero = engine.restore(frames, weight=0.0)[0].image
    half = engine.restore(frames, weight=0.5)[0].image
    full = engine.restore(frames, weight=1.0)[0].image
    assert np.array_equal(zero, photo)
    change_half = np.abs(half.astype(int) - photo).mean()
    change_full = np.abs(full.astype(int) - photo).mean()
    assert 0 < change_half < change_full
    with pytest.raises(InputError):
        engine.restore(frames, weight=1.5)


def test_blurred_face_recovers_detail(engine, photo, face):
    blurred = cv2.GaussianBlur(photo, (0, 0), 1.2)
    out = engine.restore([VideoFrame(index=0, image=blurred, face=face)], weight=1.0)[0].image
    assert sharpness(out, face) > 1.5 * sharpness(blurred, face)
    # Closer to the sharp original than the blurred input was, around the eyes.
    eyes = (slice(int(face.box[1] + 20), int(face.box[1] + 50)), slice(int(face.box[0]), int(face.box[2])))
    err_in = np.abs(blurred[eyes].astype(int) - photo[eyes]).mean()
    err_out = np.abs(out[eyes].astype(int) - photo[eyes]).mean()
    assert err_out < err_in


def test_detects_face_when_frame_carries_none(engine, photo, face):
    out = engine.restore([VideoFrame(index=3, image=photo)], weight=0.5)[0]
    assert out.face is None  # geometry in = geometry out
    assert sharpness(out.image, face) > 1.2 * sharpness(photo, face)


def test_faceless_frame_comes_back_unchanged(engine):
    blank = np.full((256, 256, 3), 100, np.uint8)
    out = engine.restore([VideoFrame(index=0, image=blank)], weight=1.0)
    assert np.array_equal(out[0].image, blank)


def test_only_center_face_restores_one_of_two(engine, photo):
    small = cv2.resize(photo, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    canvas = np.full((512, 512 + small.shape[1], 3), 200, np.uint8)
    canvas[:, :512] = photo
    canvas[: small.shape[0], 512:] = small
    right = (slice(0, small.shape[0]), slice(512, None))
    both = engine.restore([VideoFrame(index=0, image=canvas)], weight=1.0)[0].image
    one = engine.restore([VideoFrame(index=0, image=canvas)], weight=1.0, only_center_face=True)[0].image
    assert not np.array_equal(both[right], canvas[right])
    # The big face (left) is nearer the centre of this canvas; the small one is left alone.
    assert np.array_equal(one[right], canvas[right])
    assert not np.array_equal(one[:, :400], canvas[:, :400])
