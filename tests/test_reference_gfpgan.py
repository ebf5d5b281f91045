"""GFPGANv1Clean (v1.3/v1.4) against the reference pack's gfpgan.npz.

The network loads the pack's deterministic weights (plain rule for every tensor, the noise
buffers included; the pack lists no GFPGAN deviation) through the released files' route:
{'params_ema': …} on disk → read_checkpoint (weights_only=True) → gfpgan_keys_from_official
→ strict load. The fixture ran with stored noise (randomize_noise=False), our default.
One forward per input: batch 1 with the RGB heads, then the batch of two faces.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.services.common.checkpoints import load_strict, read_checkpoint
from talkinghead.services.common.deterministic_weights import deterministic_state_dict
from talkinghead.services.common.errors import WeightsError
from talkinghead.services.restore.face_tensors import face_to_input, output_to_face
from talkinghead.services.restore.networks.gfpgan import (
    GFPGANv1Clean,
    gfpgan_keys_from_official,
    gfpgan_official_file,
)
from tests.reference_pack import assert_close, fixture, manifest, salt_of

pytestmark = pytest.mark.reference

MANIFEST = "gfpgan/gfpganv1clean.manifest.json"
IMAGE_ATOL, IMAGE_MEAN_ATOL = 5e-4, 5e-5  # out_image, out_image_batch2, out_rgb_*
STYLE_ATOL = 1e-4
U8_MAX_DIFF, U8_MAX_FRACTION = 1, 1e-3  # ≤ 1 count on ≤ 0.1 % of values
RGB_SIZES = (8, 16, 32, 64, 128, 256, 512)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    return fixture("gfpgan/gfpgan.npz")


@pytest.fixture(scope="module")
def state(data) -> dict[str, torch.Tensor]:
    return deterministic_state_dict(manifest(MANIFEST), salt_of(data))


@pytest.fixture(scope="module")
def official_file(state, tmp_path_factory):
    path = tmp_path_factory.mktemp("gfpgan") / "GFPGANv1.4.pth"
    torch.save(gfpgan_official_file(state), path)
    return path


@pytest.fixture(scope="module")
def net(official_file) -> GFPGANv1Clean:
    ours = gfpgan_keys_from_official(read_checkpoint(official_file))
    return load_strict(GFPGANv1Clean(), ours, str(official_file)).eval()


@pytest.fixture(scope="module")
def single(net, data):
    assert str(data["noise_mode"]) == "stored"
    with torch.inference_mode():
        return net(face_to_input(data["input_bgr_u8"], "bgr"), return_rgb=True)


@pytest.fixture(scope="module")
def batch2(net, data):
    faces = np.stack([data["input_bgr_u8"], data["input2_bgr_u8"]])
    with torch.inference_mode():
        return net(face_to_input(faces, "bgr"))


def assert_image_close(ours: torch.Tensor, expected: np.ndarray, what: str) -> None:
    assert_close(ours.numpy(), expected, IMAGE_ATOL, what)
    mean_err = float(np.mean(np.abs(ours.numpy().astype(np.float64) - expected)))
    assert mean_err <= IMAGE_MEAN_ATOL, f"{what}: mean |ours - fixture| = {mean_err:.3g}"


# --- checkpoint layout ---------------------------------------------------------------------


def test_state_dict_matches_manifest_in_order():
    expected = [(n, s) for n, s, _ in manifest(MANIFEST).tensors]
    assert [(k, tuple(v.shape)) for k, v in GFPGANv1Clean().state_dict().items()] == expected


def test_official_file_loads_strict(net, state, official_file):
    assert list(read_checkpoint(official_file)) == ["params_ema"]  # the released files' layout
    loaded = net.state_dict()
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_params_fallback_and_errors(state, tmp_path):
    path = tmp_path / "params_only.pth"
    torch.save({"params": state}, path)
    loaded = load_strict(GFPGANv1Clean(), gfpgan_keys_from_official(read_checkpoint(path)), str(path))
    assert torch.equal(loaded.state_dict()["final_linear.weight"], state["final_linear.weight"])

    broken = {k: v for k, v in state.items() if k != "stylegan_decoder.noises.noise7"}
    path = tmp_path / "broken.pth"
    torch.save(gfpgan_official_file(broken), path)
    with pytest.raises(WeightsError, match=r"stylegan_decoder\.noises\.noise7"):
        load_strict(GFPGANv1Clean(), gfpgan_keys_from_official(read_checkpoint(path)), str(path))
    with pytest.raises(WeightsError, match="params_ema"):
        gfpgan_keys_from_official({"state_dict": state})


# --- pre-processing ------------------------------------------------------------------------


def test_input_is_bit_identical(data):
    for key in ("input", "input2"):
        bgr = data[f"{key}_bgr_u8"]
        np.testing.assert_array_equal(face_to_input(bgr, "bgr").numpy(), data[key])
        rgb = np.ascontiguousarray(bgr[..., ::-1])  # our frames' order lands on the same tensor
        np.testing.assert_array_equal(face_to_input(rgb, "rgb").numpy(), data[key])


# --- network -------------------------------------------------------------------------------


def test_style_code(single, data):
    assert_close(single.style_code.numpy(), data["style_code"], STYLE_ATOL, "style_code")


def test_out_image(single, data):
    assert_image_close(single.image, data["out_image"], "out_image")


def test_out_rgbs(single, data):
    assert [tuple(r.shape[2:]) for r in single.rgbs] == [(s, s) for s in RGB_SIZES]
    for size, rgb in zip(RGB_SIZES, single.rgbs, strict=True):
        assert_image_close(rgb, data[f"out_rgb_{size}"], f"out_rgb_{size}")


def test_out_image_batch2(batch2, data):
    assert batch2.rgbs == []
    assert_image_close(batch2.image, data["out_image_batch2"], "out_image_batch2")


# --- post-processing -----------------------------------------------------------------------


def test_restored_uint8(single, data):
    expected = data["restored_bgr_u8"]
    # From the fixture's own float output the conversion is exact.
    np.testing.assert_array_equal(output_to_face(torch.from_numpy(data["out_image"]), "bgr")[0], expected)
    before = single.image.clone()
    ours = output_to_face(single.image, "bgr")[0]
    assert torch.equal(single.image, before), "the conversion must not clamp the caller's tensor"
    diff = np.abs(ours.astype(np.int16) - expected.astype(np.int16))
    assert ours.dtype == np.uint8 and ours.shape == expected.shape
    assert diff.max() <= U8_MAX_DIFF, f"restored_bgr_u8: max diff {diff.max()}"
    assert np.mean(diff > 0) <= U8_MAX_FRACTION, f"restored_bgr_u8: {np.mean(diff > 0):.2%} differ"
    np.testing.assert_array_equal(output_to_face(single.image, "rgb")[0], ours[..., ::-1])
