"""MuseTalk's face parser (our BiSeNet) and jaw-mask blending against the reference pack.

The parser's forward is checked on its three logit maps (deterministic weights in the
official layout, loaded through our key mapping, strict); its argmax wherever the pack's top
two scores are at least 1e-3 apart. With deterministic weights the labels mean nothing, so
the mask post-processing and both of upstream's blending paths are checked on the pack's
synthetic label map: exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from talkinghead.services.common.errors import WeightsError
from talkinghead.services.lipsync import musetalk_blend as mb
from talkinghead.services.lipsync.networks.bisenet import (
    BiSeNet,
    bisenet_keys_from_official,
    load_bisenet,
)
from tests.musetalk_pack import assert_sampled, assert_uint8
from tests.reference_pack import fixture, manifest, require, salt_of

pytestmark = pytest.mark.reference

FIXTURE = "musetalk/parsing.npz"
MANIFEST = "musetalk/bisenet.manifest.json"


@pytest.fixture(scope="module")
def data():
    return fixture(FIXTURE)


@pytest.fixture(scope="module")
def weights(data, tmp_path_factory):
    from talkinghead.services.lipsync import musetalk_weights as mw

    root = tmp_path_factory.mktemp("musetalk-parser")
    mw.write_deterministic_checkpoints(root, salt_of(data), parts=("parser",))
    return root


@pytest.fixture(scope="module")
def outputs(weights, data):
    from talkinghead.services.lipsync import musetalk_weights as mw

    net, _ = mw.load_parser(weights)
    crop = Image.fromarray(data["bisenet_input_rgb512_uint8"])
    with torch.no_grad():
        return net(mb.parser_input([crop]))


def rgb(bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bgr[..., ::-1])


def test_state_dict_is_the_manifest():
    ours = [(n, tuple(t.shape)) for n, t in BiSeNet().state_dict().items()]
    assert ours == [(n, s) for n, s, _ in manifest(MANIFEST).tensors]


def test_files_are_the_manifests(weights):
    """The written files hold exactly the tensors the manifest lists for each file."""
    from talkinghead.services.lipsync import musetalk_weights as mw

    raw = json.loads(require(MANIFEST).read_text())
    for key, listed in (("parser", raw["file_tensors"]), ("parser_backbone", raw["resnet18_file_tensors"])):
        state = torch.load(weights / mw.FILES[key], weights_only=True)
        assert [(n, list(t.shape)) for n, t in state.items()] == [(n, s) for n, s, _ in listed]


def test_official_file_loads_strictly_and_mismatch_is_named(weights, tmp_path):
    state = torch.load(weights / "musetalk/face-parse-bisent/79999_iter.pth", weights_only=True)
    no_counters = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    BiSeNet().load_state_dict(bisenet_keys_from_official(no_counters), strict=True)
    bad = dict(state)
    bad["ffm.conv1.weight"] = torch.zeros(3, 3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="ffm.conv1.weight"):
        load_bisenet(tmp_path / "bad.pth")


def test_parser_input(data):
    x = mb.parser_input([Image.fromarray(data["bisenet_input_rgb512_uint8"])])
    assert_sampled(x.numpy(), data, "bisenet_input_normalized")


def test_parser_input_from_the_frame(data):
    """The crop box around the face box, cut from the frame (black outside) and resized."""
    box = tuple(int(v) for v in data["face_box_x1y1x2y2"])
    cbox = mb.crop_box(box)
    assert cbox == tuple(int(v) for v in data["crop_box_x1y1x2y2"])
    assert (cbox[2] - cbox[0]) // 2 == int(data["crop_half_size_s"])
    crop = mb.crop_image(rgb(data["frame_bgr"]), cbox)
    resized = np.asarray(crop.resize((512, 512), Image.BILINEAR))
    np.testing.assert_array_equal(resized, data["bisenet_input_rgb512_uint8"])


@pytest.mark.parametrize("which", ["feat_out", "feat_out16", "feat_out32"])
def test_logits(outputs, data, which):
    ours = {"feat_out": outputs.out, "feat_out16": outputs.out16, "feat_out32": outputs.out32}[which]
    assert_sampled(ours.numpy(), data, f"logits_{which}")


def test_labels(outputs, data):
    labels = outputs.out[0].argmax(0).numpy().astype(np.uint8)
    close = data["labels_top2_margin_lt_1e-3"]
    expected = data["labels_argmax_uint8"]
    assert np.array_equal(labels[~close], expected[~close])
    histogram = np.bincount(labels.ravel(), minlength=19)
    moved = int(np.abs(histogram - data["labels_class_histogram"]).sum())
    assert moved <= 2 * int(close.sum())  # only the near-ties may move between classes
    # the real-net masks follow from those labels
    for mode in ("raw", "jaw"):
        mask = mb.labels_to_mask(expected, mode)
        np.testing.assert_array_equal(mask, data[f"real_mask_{mode}_512"])


def test_mask_kernels(data):
    np.testing.assert_array_equal(mb.jaw_kernel(), data["fp_kernel"])
    np.testing.assert_array_equal(mb.cheek_kernel(), data["fp_cheek_kernel"])
    np.testing.assert_array_equal(mb.cheek_band(), data["fp_cheek_mask"])


@pytest.mark.parametrize("mode", ["jaw", "raw", "neck"])
def test_masks_from_the_synthetic_labels(data, mode):
    ours = mb.labels_to_mask(data["synthetic_labels_512"], mode)
    np.testing.assert_array_equal(ours, data[f"synthetic_mask_{mode}_512"])


def test_both_blending_paths(data):
    """get_image (blur 0.05) and the realtime prepare-once path (0.1), exactly."""
    box = tuple(int(v) for v in data["face_box_x1y1x2y2"])
    cbox = mb.crop_box(box)
    mask512 = mb.labels_to_mask(data["synthetic_labels_512"], "jaw")
    size = (cbox[2] - cbox[0], cbox[3] - cbox[1])
    np.testing.assert_array_equal(np.asarray(Image.fromarray(mask512).resize(size)),
                                  data["face_seg_jaw_resized"])
    assert mb.blur_kernel(size[0], mb.BLUR_OFFLINE) == int(data["blur_kernel_get_image"])
    assert mb.blur_kernel(size[0], mb.BLUR_REALTIME) == int(data["blur_kernel_prepare_material"])
    realtime = mb.prepare_mask(mask512, box, cbox, mb.BLUR_REALTIME)
    np.testing.assert_array_equal(realtime, data["mask_prepare_material"])
    frame, face = rgb(data["frame_bgr"]), rgb(data["face_bgr"])
    for blur, key in ((mb.BLUR_OFFLINE, "blended_get_image"),
                      (mb.BLUR_REALTIME, "blended_get_image_blending")):
        material = mb.BlendMaterial(box, cbox, mb.prepare_mask(mask512, box, cbox, blur))
        ours = mb.blend(frame, face, material)
        assert_uint8(rgb(ours), data[key], key, levels=0)
