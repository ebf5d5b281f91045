"""The paste-back speed-up (the blend limited to the face's square) keeps the official
result: against facexlib's whole-frame formula, written out here."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from talkinghead.services.restore.face_align import (
    NON_FACE_CLASSES,
    alignment_matrix,
    face_region,
    inverse_matrix,
    paste_face,
    square_soft_mask,
)

FACE_LANDMARKS = np.array([[250.0, 300], [330, 298], [292, 350], [258, 395], [325, 393]])


def official_parse_paste(background, face, inverse, classes):
    """facexlib's paste with the parser's mask, as published: float64, the whole frame."""
    height, width = background.shape[:2]
    mask = np.where(np.isin(classes, NON_FACE_CLASSES), 0.0, 255.0)
    mask = cv2.GaussianBlur(mask, (101, 101), 11)
    mask = cv2.GaussianBlur(mask, (101, 101), 11)
    mask[:10, :] = mask[-10:, :] = 0
    mask[:, :10] = mask[:, -10:] = 0
    mask = cv2.resize(mask / 255.0, (512, 512))
    mask = cv2.warpAffine(mask, inverse, (width, height), flags=3)
    warped = cv2.warpAffine(face, inverse, (width, height))
    return (mask[..., None] * warped + (1 - mask[..., None]) * background).astype(np.uint8)


def official_square_paste(background, face, inverse):
    height, width = background.shape[:2]
    eroded, soft = square_soft_mask(inverse, height, width)
    warped = eroded[..., None] * cv2.warpAffine(face, inverse, (width, height))
    return (soft[..., None] * warped + (1 - soft[..., None]) * background).astype(np.uint8)


def scene(shape, shift):
    rng = np.random.default_rng(7)
    background = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    face = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:512, :512]
    classes = np.where((yy - 256) ** 2 + (xx - 256) ** 2 < 200**2, 1, 0).astype(np.uint8)
    classes[400:, 200:320] = 17  # a neck-like region the mask leaves out
    inverse = inverse_matrix(alignment_matrix(FACE_LANDMARKS + shift))
    return background, face, inverse, classes


@pytest.mark.parametrize("shape, shift", [((512, 512), (0, 0)), ((720, 1280), (600, 200)),
                                          ((600, 700), (-200, -260))],
                         ids=["demo-size", "large-frame", "face-half-outside"])
def test_parse_paste_matches_the_official_formula(shape, shift):
    background, face, inverse, classes = scene(shape, np.array(shift))
    ours = paste_face(background, face, inverse, classes)
    official = official_parse_paste(background, face, inverse, classes)
    assert np.array_equal(ours, official)
    # and the face really was pasted (the test would pass on a no-op otherwise)
    assert (ours != background).mean() > 0.01


@pytest.mark.parametrize("shift", [(0, 0), (-200, -260)])
def test_square_paste_is_unchanged(shift):
    background, face, inverse, _ = scene((600, 700), np.array(shift))
    assert np.array_equal(paste_face(background, face, inverse),
                          official_square_paste(background, face, inverse))


def test_outside_the_face_region_the_frame_is_untouched():
    background, face, inverse, classes = scene((720, 1280), np.array((600, 200)))
    y0, y1, x0, x1 = face_region(inverse, 512, 720, 1280)
    assert 0 < y1 - y0 < 720 and 0 < x1 - x0 < 1280
    out = paste_face(background, face, inverse, classes)
    outside = np.ones((720, 1280), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], background[outside])
