"""GFPGAN's alignment and paste-back against gfpgan_pipeline.npz (detector bypassed), at the
pack's own tolerances (gfpgan/README.md, "Recommended tolerances")."""

from __future__ import annotations

import numpy as np
import pytest

from talkinghead.services.restore.face_align import (
    FFHQ_TEMPLATE_512,
    alignment_matrix,
    inverse_matrix,
    paste_face,
    square_soft_mask,
    upscaled_background,
    warp_face,
)
from tests.reference_pack import assert_close, fixture

pytestmark = pytest.mark.reference

# The pack's checks. Its crop and square masks are "exact with cv2, or within 1 count / 1e-5
# when the warps are not cv2's": ours are not (face_align.warp_bilinear samples exactly).
AFFINE_ATOL = 1e-6  # affine_matrix, inverse_affine_*
CROP_MAX_COUNTS = 1  # cropped_face_bgr_u8 (measured: 1 count on 14 of 786,432 values)
MASK_ATOL = 1e-5  # soft_mask_*_square (measured: 1.6e-6, 1.7e-6)
OUTPUT_MAX_COUNTS, OUTPUT_MAX_FRACTION = 2, 0.02  # output_*

# What still differs because we run OpenCV 4 and the pack ran 5.0, in one place: only
# paste_face's uint8 warp of the restored face is still cv2.warpAffine (tests/
# test_restore_paste.py holds it to facexlib's formula as written), and OpenCV 4 rounds its
# sampling positions to 1/32 pixel. The pasted square-mask frames then differ by up to
# 2 counts on 1.0 % of their values (OpenCV 5: 1 count on 0.003 %), inside the pack's own
# output check above, so no bound here is loosened for it.

# OpenCV 5.0.0's estimateAffinePartial2D(..., method=LMEDS) on two more landmark sets, run
# in a separate environment: the published pack's landmarks with the nose 40 px off (an
# outlier LMedS must drop), and a small tilted face far from the origin. Ours gives the same
# bits. Both sets are written here, not read from the pack: another pack has other landmarks.
OUTLIER_LANDMARKS = np.array([[141.1943032201433, 106.27496315494494],
                              [190.51547996362675, 115.89519367135688],
                              [157.8713283736954 + 31.0, 141.0734608146774 - 25.0],
                              [131.78209980868678, 160.1336539127277],
                              [178.73338057955672, 168.6495758542795]])
OPENCV5_OUTLIER = np.array([[2.3738755259994813, 0.47396538451026, -189.86532582443286],
                            [-0.47396538451026, 2.3738755259994813, 54.800015961168924]])
TILTED_LANDMARKS = np.array([[942.3817282253631, 271.9605052556764],
                             [990.9268145815371, 291.59259719132024],
                             [956.6274037994674, 311.0518097808617],
                             [925.2154402390734, 325.12003159368874],
                             [970.1729614500182, 342.1228726388947]])
OPENCV5_TILTED = np.array([[2.2160978557749926, 0.8494216908328318, -2126.311491788467],
                           [-0.8494216908328318, 2.2160978557749926, 436.9188673170266]])


@pytest.fixture(scope="module")
def pipe():
    return fixture("gfpgan/gfpgan_pipeline.npz")


def least_squares_similarity(landmarks: np.ndarray, template: np.ndarray) -> np.ndarray:
    """The closed-form fit a plain implementation would use instead of LMedS + refinement."""
    x, y = landmarks[:, 0], landmarks[:, 1]
    design = np.block([[x[:, None], -y[:, None], np.ones((5, 1)), np.zeros((5, 1))],
                       [y[:, None], x[:, None], np.zeros((5, 1)), np.ones((5, 1))]])
    a, b, tx, ty = np.linalg.lstsq(design, np.r_[template[:, 0], template[:, 1]], rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def test_alignment_is_the_published_estimator(pipe):
    assert_close(alignment_matrix(pipe["landmarks_5"]), pipe["affine_matrix"], AFFINE_ATOL,
                 "affine_matrix")


@pytest.mark.parametrize("points", ["float64", "float32"])
def test_a_least_squares_fit_fails_the_bound(pipe, points):
    """The check can fail: the least-squares similarity, on the points as given or rounded to
    float32 as OpenCV reads them, lands 1.4e-5 and 8.2e-6 from the published matrix."""
    landmarks, template = pipe["landmarks_5"], FFHQ_TEMPLATE_512
    if points == "float32":
        landmarks, template = (p.astype(np.float32).astype(np.float64)
                               for p in (landmarks, template))
    err = np.abs(least_squares_similarity(landmarks, template) - pipe["affine_matrix"]).max()
    assert err > AFFINE_ATOL, f"least squares is {err:.3g} from the published matrix"


@pytest.mark.parametrize("case", ["outlier", "tilted"])
def test_alignment_is_opencv5_on_other_landmarks(case):
    """Not a fit to one example: OpenCV 5's result on other sets, to 1e-9 (measured: 0)."""
    landmarks, expected = {"outlier": (OUTLIER_LANDMARKS, OPENCV5_OUTLIER),
                           "tilted": (TILTED_LANDMARKS, OPENCV5_TILTED)}[case]
    assert_close(alignment_matrix(landmarks), expected, 1e-9, f"OpenCV 5 on '{case}'")
    # and a plain fit would not do: the outlier drags it, the far translation amplifies it
    assert np.abs(least_squares_similarity(landmarks, FFHQ_TEMPLATE_512) - expected).max() > 1e-4


def test_crop(pipe):
    crop = warp_face(pipe["frame_bgr_u8"], pipe["affine_matrix"], "bgr")
    diff = np.abs(crop.astype(int) - pipe["cropped_face_bgr_u8"].astype(int))
    assert diff.max() <= CROP_MAX_COUNTS, f"a value is {diff.max()} counts off"
    assert (diff > 0).mean() <= 1e-4, f"{(diff > 0).mean():.4%} of values differ"
    # the same crop from the RGB frame, border in RGB order
    rgb = warp_face(pipe["frame_bgr_u8"][..., ::-1].copy(), pipe["affine_matrix"], "rgb")
    assert np.array_equal(rgb[..., ::-1], crop)


@pytest.mark.parametrize("up", [1, 2])
def test_inverse_and_square_mask(pipe, up):
    inverse = inverse_matrix(pipe["affine_matrix"], up)
    assert_close(inverse, pipe[f"inverse_affine_up{up}"], AFFINE_ATOL, f"inverse_affine_up{up}")
    height, width = (s * up for s in pipe["frame_bgr_u8"].shape[:2])
    _, soft = square_soft_mask(inverse, height, width, up)
    assert_close(soft, pipe[f"soft_mask_up{up}_square"], MASK_ATOL, f"soft_mask_up{up}_square")


@pytest.mark.parametrize("up", [1, 2])
def test_square_paste_back(pipe, up):
    background = upscaled_background(pipe["frame_bgr_u8"], up)
    out = paste_face(background, pipe["restored_face_bgr_u8"], pipe[f"inverse_affine_up{up}"],
                     upscale=up)
    diff = np.abs(out.astype(int) - pipe[f"output_up{up}_square_bgr_u8"].astype(int))
    assert diff.max() <= OUTPUT_MAX_COUNTS and (diff > 0).mean() <= OUTPUT_MAX_FRACTION
