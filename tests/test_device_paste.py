"""The per-frame work on the engine's device (services/restore/device_paste.py) against
facexlib's paste formula (written out in tests/test_restore_paste.py) and the host crop.

The bound, in counts of the uint8 output, against the formula: 0 where the device computes
in float64 (cpu, cuda). The torch path does the host path's arithmetic, not an
approximation of it: the crop is face_align.warp_bilinear's exact float64 warp with its
operations in the same order; the paste-back's warps are OpenCV 4's warpAffine as it
computes them (positions in 1/1024 then 1/32 pixel, uint8 weights in 15-bit fixed point,
the float mask with its float weights, summed in its order); the blend is the same float64
(square mask: float32) expression, truncated. mps has no float64 (not checked here).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.services.restore import device_paste as dp
from talkinghead.services.restore import face_align as fa
from tests.test_restore_paste import official_parse_paste, official_square_paste, scene

MAX_COUNTS = 0  # against facexlib's formula, cpu and cuda (float64)
# The parse mask blurred on the device: its taps summed in another order than OpenCV's
# dispatched code, so the last bits of a mask value may differ, and a blend that lands
# within ~1e-15 of an integer may truncate the other way (device_paste.py).
MASK_TOL = 1e-14
BLURRED_MASK_COUNTS, BLURRED_MASK_SHARE = 1, 1e-4

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SCENES = [((512, 512), (0, 0)), ((720, 1280), (600, 200)), ((600, 700), (-200, -260))]
SCENE_IDS = ["demo-size", "large-frame", "face-half-outside"]


def on(device, *arrays):
    return torch.from_numpy(np.ascontiguousarray(np.stack(arrays))).to(device)


def counts_off(ours: np.ndarray, expected: np.ndarray) -> int:
    return int(np.abs(ours.astype(int) - expected.astype(int)).max())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape, shift", SCENES, ids=SCENE_IDS)
def test_parse_paste_is_the_official_formula(device, shape, shift):
    background, face, inverse, classes = scene(shape, np.array(shift))
    mask = fa.parse_face_mask(classes)
    out = dp.paste_faces(on(device, background), on(device, face).float(), [inverse], [mask])
    ours = out[0].cpu().numpy()
    assert counts_off(ours, official_parse_paste(background, face, inverse, classes)) <= MAX_COUNTS
    assert (ours != background).mean() > 0.01  # the face really was pasted


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape, shift", SCENES, ids=SCENE_IDS)
def test_square_paste_is_the_official_formula(device, shape, shift):
    background, face, inverse, _ = scene(shape, np.array(shift))
    masks = [fa.square_soft_mask(inverse, *shape)]
    out = dp.paste_faces(on(device, background), on(device, face).float(), [inverse], masks,
                         square=True)
    ours = out[0].cpu().numpy()
    assert counts_off(ours, official_square_paste(background, face, inverse)) <= MAX_COUNTS
    assert (ours != background).mean() > 0.01


@pytest.mark.parametrize("device", DEVICES)
def test_a_batch_of_faces_with_regions_of_different_sizes(device):
    """Regions padded to the largest in the batch: each face as if pasted alone."""
    scenes = [scene((720, 1280), np.array(s)) for s in [(600, 200), (-200, -260)]]
    masks = [fa.parse_face_mask(c) for *_, c in scenes]
    out = dp.paste_faces(on(device, *[s[0] for s in scenes]),
                         on(device, *[s[1] for s in scenes]).float(),
                         [s[2] for s in scenes], masks).cpu().numpy()
    for ours, (background, face, inverse, classes) in zip(out, scenes, strict=True):
        assert counts_off(ours, official_parse_paste(background, face, inverse, classes)) == 0


@pytest.mark.parametrize("device", DEVICES)
def test_crops_are_the_host_crops(device):
    """The alignment warp: bit-identical to face_align.warp_face (exact float64), faces
    inside, across and outside the frame's edge."""
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (600, 700, 3), dtype=np.uint8) for _ in range(3)]
    landmarks = [fa.FFHQ_TEMPLATE_512 * 0.4 + off for off in ((150, 120), (-90, -60), (520, 380))]
    matrices = [fa.alignment_matrix(lm) for lm in landmarks]
    crops = dp.warp_crops(on(device, *frames), matrices, fa.BORDER_BGR[::-1]).cpu().numpy()
    for crop, frame, matrix in zip(crops, frames, matrices, strict=True):
        assert np.array_equal(crop, fa.warp_face(frame, matrix, "rgb"))


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_conversions_are_the_host_ones(device):
    from talkinghead.services.restore.face_tensors import face_to_input, output_to_face

    rng = np.random.default_rng(4)
    crops = rng.integers(0, 256, (2, 512, 512, 3), dtype=np.uint8)
    x = dp.crops_to_input(on(device, *crops).double()).cpu()
    assert torch.equal(x, face_to_input(crops, "rgb"))
    y = torch.randn(2, 3, 512, 512) * 1.2
    assert np.array_equal(dp.output_to_faces(y.to(device)).cpu().numpy(),
                          output_to_face(y, "rgb"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape, shift", SCENES[:2], ids=SCENE_IDS[:2])
def test_masks_blurred_on_the_device_are_the_host_masks(device, shape, shift):
    """parse_face_masks (two 101 px float64 blurs on the device) against OpenCV's, and the
    paste made with it against the formula: within the stated bounds."""
    background, face, inverse, classes = scene(shape, np.array(shift))
    ours = dp.parse_face_masks(on(device, classes, classes))
    host = fa.parse_face_mask(classes)
    for mask in ours.cpu().numpy():
        assert np.abs(mask - host).max() <= MASK_TOL
    assert 0 < host.min() or host.max() == 1 or host.std() > 0.1  # a real face mask
    out = dp.paste_faces(on(device, background), on(device, face).float(), [inverse], ours[:1])
    official = official_parse_paste(background, face, inverse, classes)
    off = np.abs(out[0].cpu().numpy().astype(int) - official.astype(int))
    assert off.max() <= BLURRED_MASK_COUNTS
    assert (off > 0).mean() <= BLURRED_MASK_SHARE
