"""S3FD (the face detector Wav2Lip runs) against the reference pack.

Deterministic weights from the manifest (salt read from the fixture) go through the same key
mapping a real ``s3fd.pth`` does and load strict. The network must reproduce the 12 raw maps
within 1e-4; the post-processing, run on the fixture's own maps (so float noise cannot move a
score across a cut), must give the same candidates and detections as sets and the same box;
from our own maps only the kept box is required (near-tied scores reorder under 1e-7 noise).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.services.common.deterministic_weights import deterministic_state_dict
from talkinghead.services.common.errors import WeightsError
from talkinghead.services.lipsync.networks.s3fd import S3FD, load_s3fd, s3fd_keys_from_official
from talkinghead.services.lipsync.s3fd_detect import (
    best_face_box,
    decode_detections,
    detect_faces,
    preprocess,
    select_detections,
)
from tests.reference_pack import assert_close, fixture, fixture_tags, manifest, salt_of

pytestmark = pytest.mark.reference

MANIFEST = "wav2lip/s3fd.manifest.json"
FIXTURE = "wav2lip/s3fd.npz"
TAGS = fixture_tags(FIXTURE, "image_bgr_", "", ("128x128", "240x320"))
MAP_NAMES = tuple(f"{kind}{level}" for level in range(1, 7) for kind in ("cls", "reg"))
MAP_TOL = 1e-4
BOX_TOL = 1e-2
SCORE_TOL = 1e-4


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    return fixture(FIXTURE)


@pytest.fixture(scope="module")
def official_state(data) -> dict[str, torch.Tensor]:
    """What torch.load of an s3fd.pth with these weights returns: a plain state dict."""
    return deterministic_state_dict(manifest(MANIFEST), salt_of(data))


@pytest.fixture(scope="module")
def net(official_state) -> S3FD:
    model = S3FD()
    model.load_state_dict(s3fd_keys_from_official(official_state), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def our_maps(net, data) -> dict[str, list[torch.Tensor]]:
    with torch.no_grad():
        return {tag: net(preprocess(data[f"image_bgr_{tag}"], "bgr")) for tag in TAGS}


def fixture_maps(data, tag: str) -> list[torch.Tensor]:
    return [torch.from_numpy(data[f"out_{tag}_{name}"]) for name in MAP_NAMES]


def assert_same_rows(ours: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Same number of rows, each fixture row paired with a distinct row of ours whose box is
    within BOX_TOL px (every coordinate) and whose score is within SCORE_TOL."""
    assert ours.shape == expected.shape, f"{what}: {len(ours)} rows, fixture has {len(expected)}"
    by_x1 = np.argsort(ours[:, 0], kind="stable")
    sorted_x1 = ours[by_x1, 0]
    used = np.zeros(len(ours), dtype=bool)
    for row in expected:
        lo, hi = np.searchsorted(sorted_x1, [row[0] - BOX_TOL, row[0] + BOX_TOL], side="left")
        near = [j for j in by_x1[lo:hi + 1] if not used[j]]
        near = [j for j in near if np.all(np.abs(ours[j, :4] - row[:4]) <= BOX_TOL)]
        assert near, f"{what}: fixture row {row.tolist()} has no matching box in ours"
        best = min(near, key=lambda j: float(np.max(np.abs(ours[j, :4] - row[:4]))))
        used[best] = True
        assert abs(float(ours[best, 4]) - float(row[4])) <= SCORE_TOL, (
            f"{what}: box {row[:4].tolist()} scores {ours[best, 4]} here, {row[4]} in the fixture"
        )


# ---- checkpoint layout -------------------------------------------------------------------

def test_state_dict_is_the_manifest():
    expected = [(name, shape) for name, shape, _dtype in manifest(MANIFEST).tensors]
    assert [(k, tuple(v.shape)) for k, v in S3FD().state_dict().items()] == expected


def test_key_mapping_is_identity_and_checkpoint_loads(official_state, tmp_path):
    assert list(s3fd_keys_from_official(official_state)) == list(official_state)
    path = tmp_path / "s3fd.pth"
    torch.save(official_state, path)
    net = load_s3fd(path)
    assert not net.training
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, official_state[name]), name


def test_mismatching_checkpoint_names_the_tensor(official_state, tmp_path):
    broken = dict(official_state)
    broken["fc6.weight"] = torch.zeros(1024, 512, 1, 1)
    path = tmp_path / "wrong_fc6.pth"
    torch.save(broken, path)
    with pytest.raises(WeightsError, match="fc6.weight"):
        load_s3fd(path)


# ---- input -------------------------------------------------------------------------------

@pytest.mark.parametrize("tag", TAGS)
def test_preprocess_equals_fixture_input(data, tag):
    bgr = data[f"image_bgr_{tag}"]
    expected = data[f"input_{tag}"]
    ours = preprocess(bgr, "bgr")
    assert ours.dtype == torch.float32 and tuple(ours.shape) == expected.shape
    assert np.array_equal(ours.numpy(), expected)
    assert np.array_equal(preprocess(np.ascontiguousarray(bgr[..., ::-1]), "rgb").numpy(), expected)


def test_preprocess_requires_a_colour_order(data):
    with pytest.raises(ValueError, match="color_order"):
        preprocess(data[f"image_bgr_{TAGS[0]}"], "yuv")  # type: ignore[arg-type]


# ---- network -----------------------------------------------------------------------------

@pytest.mark.parametrize("tag", TAGS)
def test_network_maps_match_fixture(data, our_maps, tag):
    maps = our_maps[tag]
    assert len(maps) == len(MAP_NAMES)
    for name, ours in zip(MAP_NAMES, maps, strict=True):
        assert_close(ours.numpy(), data[f"out_{tag}_{name}"], MAP_TOL, f"{tag} {name}")


def test_batch_of_frames_matches_single_frames(net, data, our_maps):
    """Two frames in one batch: each frame's maps as when alone, and its own box."""
    frame = data[f"image_bgr_{TAGS[-1]}"]
    batch = np.stack([frame, frame[:, ::-1]])
    with torch.no_grad():
        maps = net(preprocess(batch, "bgr"))
        mirrored = net(preprocess(np.ascontiguousarray(frame[:, ::-1]), "bgr"))
    for name, both, alone, alone_mirrored in zip(MAP_NAMES, maps, our_maps[TAGS[-1]], mirrored, strict=True):
        assert_close(both[:1].numpy(), alone.numpy(), MAP_TOL, f"batch frame 0 {name}")
        assert_close(both[1:].numpy(), alone_mirrored.numpy(), MAP_TOL, f"batch frame 1 {name}")
    boxes = detect_faces(net, batch, "bgr")
    assert boxes[0] == tuple(int(v) for v in data[f"first_box_x1y1x2y2_{TAGS[-1]}"])
    assert boxes[1] == best_face_box(select_detections(decode_detections(mirrored)[0]))


# ---- post-processing ---------------------------------------------------------------------

@pytest.mark.parametrize("tag", TAGS)
def test_postprocessing_of_fixture_maps(data, tag):
    candidates = decode_detections(fixture_maps(data, tag))
    assert len(candidates) == 1
    assert_same_rows(candidates[0], data[f"candidates_before_nms_{tag}"], f"{tag} candidates")
    detections = select_detections(candidates[0])
    assert_same_rows(detections, data[f"detections_{tag}"], f"{tag} detections")
    assert np.all(np.diff(detections[:, 4]) <= 0), "detections must be best first"
    box = best_face_box(detections)
    assert box == tuple(int(v) for v in data[f"first_box_x1y1x2y2_{tag}"])


@pytest.mark.parametrize("tag", TAGS)
def test_first_box_from_our_maps(data, our_maps, tag):
    detections = select_detections(decode_detections(our_maps[tag])[0])
    assert best_face_box(detections) == tuple(int(v) for v in data[f"first_box_x1y1x2y2_{tag}"])


def test_best_face_box_clips_negatives_and_truncates():
    detections = np.array([[-3.7, 10.9, 120.99, 80.2, 0.9], [0, 0, 1, 1, 0.8]], dtype=np.float32)
    assert best_face_box(detections) == (0, 10, 120, 80)
    assert best_face_box(np.zeros((0, 5), dtype=np.float32)) is None
