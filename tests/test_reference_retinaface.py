"""RetinaFace-R50 (GFPGAN's face detector) against the reference pack.

Deterministic weights from the manifest (salt read from the fixture, with the pack's one
deviation on ``body.bn1.running_var``) are saved in the official file layout and loaded
through our key mapping, strict. The raw heads must match within the README's tolerances,
the priors exactly, the preprocessing exactly. Detections are compared as the README
recommends: same count, rows paired by box (near-tied scores may swap order), boxes and
landmarks within 1e-2 px, scores within 2e-5; both from the fixture's own raw outputs
(isolating the decoding, thresholding and NMS) and from our network's.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from talkinghead.services.common.deterministic_weights import deterministic_state_dict
from talkinghead.services.common.errors import WeightsError
from talkinghead.services.restore.networks.retinaface import (
    RetinaFace,
    RetinaFaceOutput,
    load_retinaface,
    retinaface_keys_from_official,
)
from talkinghead.services.restore.retinaface_detect import (
    detect,
    nms,
    preprocess,
    prior_boxes,
    select_detections,
)
from tests.reference_pack import assert_close, fixture, fixture_tags, manifest, salt_of

pytestmark = pytest.mark.reference

MANIFEST = "gfpgan/retinaface_resnet50.manifest.json"
FIXTURE = "gfpgan/retinaface.npz"
TAGS = fixture_tags(FIXTURE, "img_", "_bgr_u8", ("320x320", "240x320"))
LOC_TOL = 1e-4  # loc and landmarks
CONF_TOL = 2e-5
PX_TOL = 1e-2
SCORE_TOL = 2e-5


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    return fixture(FIXTURE)


@pytest.fixture(scope="module")
def official_state(data) -> dict[str, torch.Tensor]:
    """The detector's deterministic weights, names as in the manifest (after facexlib's
    ``module.`` stripping), with the pack's deviation: bn1's running variance × 4096."""
    salt = salt_of(data)
    state = deterministic_state_dict(manifest(MANIFEST), salt)
    name = "body.bn1.running_var"
    rng = np.random.default_rng(zlib.crc32(f"{salt}:{name}".encode()))
    value = (0.5 + rng.random(tuple(state[name].shape))) * 4096
    state[name] = torch.from_numpy(value.astype(np.float32))
    return state


@pytest.fixture(scope="module")
def net(official_state) -> RetinaFace:
    model = RetinaFace()
    model.load_state_dict(retinaface_keys_from_official(official_state), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def our_outputs(net, data) -> dict[str, RetinaFaceOutput]:
    with torch.no_grad():
        return {tag: net(torch.from_numpy(data[f"input_{tag}"])) for tag in TAGS}


def heads(out: RetinaFaceOutput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return out.loc, out.conf, out.landmarks


def thresholds(data, tag: str) -> tuple[float, float]:
    return float(data[f"conf_threshold_{tag}"]), float(data["nms_threshold"])


def assert_same_detections(ours: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Same count; each fixture row paired with a distinct row of ours whose box and five
    landmarks are within PX_TOL px and whose score is within SCORE_TOL; ours best first."""
    assert ours.dtype == np.float32, f"{what}: dtype {ours.dtype}"
    assert ours.shape == expected.shape, f"{what}: shape {ours.shape}, fixture {expected.shape}"
    assert np.all(np.diff(ours[:, 4]) <= 0), f"{what}: not in descending score order"
    used = np.zeros(len(ours), dtype=bool)
    for row in expected:
        box_err = np.max(np.abs(ours[:, :4] - row[:4]), axis=1)
        box_err[used] = np.inf
        best = int(np.argmin(box_err))
        assert box_err[best] <= PX_TOL, f"{what}: fixture box {row[:4].tolist()} not found"
        used[best] = True
        points_err = float(np.max(np.abs(ours[best, 5:] - row[5:])))
        assert points_err <= PX_TOL, f"{what}: landmarks of box {row[:4].tolist()} off by {points_err}"
        score_err = abs(float(ours[best, 4]) - float(row[4]))
        assert score_err <= SCORE_TOL, f"{what}: score of box {row[:4].tolist()} off by {score_err}"


# ---- checkpoint layout -------------------------------------------------------------------

def test_state_dict_is_the_manifest():
    expected = [(name, shape) for name, shape, _dtype in manifest(MANIFEST).tensors]
    assert [(k, tuple(v.shape)) for k, v in RetinaFace().state_dict().items()] == expected


@pytest.mark.parametrize("prefix", ["module.", ""], ids=["dataparallel", "plain"])
@pytest.mark.parametrize("with_counters", [True, False], ids=["counters", "no_counters"])
def test_official_file_loads_strict(official_state, tmp_path, prefix, with_counters):
    """The released layout (``module.`` on every key) and a plain one, with or without the
    BatchNorm ``num_batches_tracked`` counters, all load strict to the same weights."""
    saved = {
        prefix + k: v for k, v in official_state.items()
        if with_counters or not k.endswith("num_batches_tracked")
    }
    path = tmp_path / "detection_Resnet50_Final.pth"
    torch.save(saved, path)
    net = load_retinaface(path)
    assert not net.training
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, official_state[name]), name


def test_mismatching_checkpoint_names_the_tensor(official_state, tmp_path):
    broken = {"module." + k: v for k, v in official_state.items()}
    broken["module.ssh2.conv7x7_3.0.weight"] = torch.zeros(64, 64, 1, 1)
    path = tmp_path / "wrong.pth"
    torch.save(broken, path)
    with pytest.raises(WeightsError, match="ssh2.conv7x7_3.0.weight"):
        load_retinaface(path)


# ---- input, priors -----------------------------------------------------------------------

@pytest.mark.parametrize("tag", TAGS)
def test_preprocess_equals_fixture_input(data, tag):
    bgr = data[f"img_{tag}_bgr_u8"]
    expected = data[f"input_{tag}"]
    ours = preprocess(bgr, "bgr")
    assert ours.dtype == torch.float32 and tuple(ours.shape) == expected.shape
    assert np.array_equal(ours.numpy(), expected)
    assert np.array_equal(preprocess(np.ascontiguousarray(bgr[..., ::-1]), "rgb").numpy(), expected)


def test_preprocess_requires_a_colour_order(data):
    with pytest.raises(ValueError, match="color_order"):
        preprocess(data[f"img_{TAGS[0]}_bgr_u8"], "yuv")  # type: ignore[arg-type]


@pytest.mark.parametrize("tag", TAGS)
def test_priors_are_exact(data, tag):
    height, width = data[f"img_{tag}_bgr_u8"].shape[:2]
    ours = prior_boxes(height, width)
    assert ours.dtype == torch.float32
    assert np.array_equal(ours.numpy(), data[f"priors_{tag}"])


# ---- network -----------------------------------------------------------------------------

@pytest.mark.parametrize("tag", TAGS)
def test_network_outputs_match_fixture(data, our_outputs, tag):
    loc, conf, landmarks = heads(our_outputs[tag])
    assert_close(loc.numpy(), data[f"loc_{tag}"], LOC_TOL, f"{tag} loc")
    assert_close(conf.numpy(), data[f"conf_{tag}"], CONF_TOL, f"{tag} conf")
    assert_close(landmarks.numpy(), data[f"landmarks_{tag}"], LOC_TOL, f"{tag} landmarks")


def test_batch_matches_single_frames(net, data, our_outputs):
    frame = data[f"input_{TAGS[-1]}"]
    batch = torch.from_numpy(np.concatenate([frame, frame[..., ::-1]]))
    with torch.no_grad():
        both = net(batch)
        mirrored = net(torch.from_numpy(np.ascontiguousarray(frame[..., ::-1])))
    tols = (LOC_TOL, CONF_TOL, LOC_TOL)
    for name, b, alone, alone_m, tol in zip(
        ("loc", "conf", "landmarks"), heads(both), heads(our_outputs[TAGS[-1]]), heads(mirrored), tols,
        strict=True
    ):
        assert_close(b[:1].numpy(), alone.numpy(), tol, f"batch row 0 {name}")
        assert_close(b[1:].numpy(), alone_m.numpy(), tol, f"batch row 1 {name}")


# ---- post-processing ---------------------------------------------------------------------

@pytest.mark.parametrize("tag", TAGS)
def test_detections_from_fixture_outputs(data, tag):
    """Decoding, threshold and NMS alone, on the fixture's raw heads."""
    height, width = data[f"img_{tag}_bgr_u8"].shape[:2]
    conf_threshold, nms_threshold = thresholds(data, tag)
    conf = data[f"conf_{tag}"][0]
    assert int(np.sum(conf[:, 1] > conf_threshold)) == int(data[f"num_pre_nms_{tag}"])
    dets = select_detections(
        torch.from_numpy(data[f"loc_{tag}"][0]),
        torch.from_numpy(conf),
        torch.from_numpy(data[f"landmarks_{tag}"][0]),
        prior_boxes(height, width),
        (height, width),
        conf_threshold,
        nms_threshold,
    )
    assert_same_detections(dets, data[f"dets_{tag}"], f"{tag} (fixture heads)")


@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize("color_order", ["bgr", "rgb"])
def test_detect_matches_fixture(net, data, tag, color_order):
    image = data[f"img_{tag}_bgr_u8"]
    if color_order == "rgb":
        image = np.ascontiguousarray(image[..., ::-1])
    conf_threshold, nms_threshold = thresholds(data, tag)
    dets = detect(net, image, color_order, conf_threshold=conf_threshold, nms_threshold=nms_threshold)
    assert_same_detections(dets, data[f"dets_{tag}"], f"{tag} {color_order}")


def test_nms_uses_area_without_plus_one():
    """IoU 0.39 with (x2−x1)(y2−y1) areas, 0.45 with the "+1" convention: both boxes stay."""
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 3.9]], dtype=np.float32)
    scores = np.array([0.99, 0.98], dtype=np.float32)
    assert nms(boxes, scores, 0.4).tolist() == [0, 1]
    assert nms(boxes, scores, 0.35).tolist() == [0]


def test_no_face_gives_an_empty_array(net, data):
    dets = detect(net, data[f"img_{TAGS[-1]}_bgr_u8"], "bgr", conf_threshold=1.0)
    assert dets.shape == (0, 15) and dets.dtype == np.float32
