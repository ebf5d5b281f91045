"""The Wav2Lip generator and the official inference data path against the reference pack.

The generator loads the pack's deterministic weights (salt read from the fixture) through
the same route as the released files (official layout on disk → read_checkpoint with
weights_only=True → wav2lip_keys_from_official → strict load) and must reproduce the
fixture's output. The box, crop and mask steps are recomputed from the fixture's frames and
detector rectangles and must match bit for bit; the uint8 output and paste-back within one
grey level (truncation can flip at an integer boundary).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from talkinghead.services.common.checkpoints import load_strict, read_checkpoint
from talkinghead.services.common.deterministic_weights import deterministic_state_dict
from talkinghead.services.common.errors import WeightsError
from talkinghead.services.lipsync import face_window as fw
from talkinghead.services.lipsync.networks.wav2lip import (
    Wav2Lip,
    wav2lip_keys_from_official,
    wav2lip_official_file,
)
from tests.reference_pack import assert_close, fixture, manifest, require, salt_of

PACK = "wav2lip"
OUTPUT_ATOL = 1e-4  # the pack's tolerance for the sigmoid output
UINT8_ATOL = 1


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    return fixture(f"{PACK}/generator.npz")


@pytest.fixture(scope="module")
def state(data) -> dict[str, torch.Tensor]:
    """Deterministic weights under the names the official loader hands to load_state_dict."""
    return deterministic_state_dict(manifest(f"{PACK}/wav2lip.manifest.json"), salt_of(data))


@pytest.fixture(scope="module")
def official_file(state, tmp_path_factory):
    """The weights written in the released layout: module.-prefixed, under 'state_dict'."""
    path = tmp_path_factory.mktemp("wav2lip") / "wav2lip.pth"
    torch.save(wav2lip_official_file(state), path)
    return path


@pytest.fixture(scope="module")
def net(official_file) -> Wav2Lip:
    ours = wav2lip_keys_from_official(read_checkpoint(official_file))
    return load_strict(Wav2Lip(), ours, str(official_file)).eval()


@pytest.fixture(scope="module")
def output(net, data) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(data["mel_input"]), torch.from_numpy(data["face_input"])).numpy()


def _face_path(data: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Boxes → smoothed → crop coords → faces for the fixture batch, with our functions."""
    frames = data["frames_bgr"]
    height, width = frames.shape[1:3]
    padded = fw.pad_boxes(data["detector_rects_x1y1x2y2"], height, width,
                          pads=tuple(data["pads_top_bottom_left_right"]))
    coords = fw.crop_coords(fw.smooth_boxes(padded))
    batch = [fw.source_frame_index(i, len(frames)) for i in range(len(data["mel_chunk_index"]))]
    faces = np.stack([fw.crop_face(frames[i], coords[i]) for i in batch])
    return padded, coords, coords[batch], faces, frames[batch]


# --- checkpoint layout ---------------------------------------------------------------------


@pytest.mark.reference
def test_state_dict_matches_manifest_in_order():
    expected = [(n, s) for n, s, _ in manifest(f"{PACK}/wav2lip.manifest.json").tensors]
    assert [(k, tuple(v.shape)) for k, v in Wav2Lip().state_dict().items()] == expected


@pytest.mark.reference
def test_official_layout_file_loads_strict(official_file, state):
    raw = read_checkpoint(official_file)  # weights_only=True
    info = manifest(f"{PACK}/wav2lip.manifest.json")
    pack = json.loads(require(f"{PACK}/wav2lip.manifest.json").read_text())  # + file layout
    assert sorted(raw) == sorted(pack["top_level_keys"])
    assert list(raw["state_dict"]) == [name for name, _shape, _dtype in pack["file_tensors"]]
    loaded = load_strict(Wav2Lip(), wav2lip_keys_from_official(raw), str(official_file)).state_dict()
    assert list(loaded) == [name for name, _shape, _dtype in info.tensors]
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


@pytest.mark.reference
@pytest.mark.parametrize("layout", ["bare_state_dict", "training_dict_unprefixed"])
def test_unprefixed_files_load_strict(layout, state, tmp_path):
    """Checkpoints from the current training script (no DataParallel) have no module."""
    obj = dict(state) if layout == "bare_state_dict" else {
        "state_dict": dict(state), "optimizer": {"state": {}, "param_groups": []},
        "global_step": 7, "global_epoch": 1}
    path = tmp_path / "unprefixed.pth"
    torch.save(obj, path)
    loaded = load_strict(Wav2Lip(), wav2lip_keys_from_official(read_checkpoint(path)), str(path))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


@pytest.mark.reference
def test_mismatching_file_names_the_tensor(state, tmp_path):
    broken = dict(state)
    del broken["audio_encoder.3.conv_block.1.running_var"]
    path = tmp_path / "broken.pth"
    torch.save(wav2lip_official_file(broken), path)
    with pytest.raises(WeightsError, match=r"audio_encoder\.3\.conv_block\.1\.running_var"):
        load_strict(Wav2Lip(), wav2lip_keys_from_official(read_checkpoint(path)), str(path))
    with pytest.raises(WeightsError, match="not a tensor"):
        wav2lip_keys_from_official({"generator": {"a": 1}})


# --- generator ---------------------------------------------------------------------------


@pytest.mark.reference
def test_generator_matches_fixture(output, data):
    assert_close(output, data["output"], OUTPUT_ATOL, "wav2lip output")


@pytest.mark.reference
def test_generator_five_dim_input_folds_into_batch(net, output, data):
    """[B,T,1,80,16] mel with [B,6,T,96,96] faces gives the 4-D results, as [B,3,T,96,96]."""
    mel = torch.from_numpy(data["mel_input"]).reshape(2, 2, 1, 80, 16)
    faces = torch.from_numpy(data["face_input"]).reshape(2, 2, 6, 96, 96).transpose(1, 2)
    with torch.no_grad():
        out = net(mel, faces)
    assert out.shape == (2, 3, 2, 96, 96)
    assert_close(out.transpose(1, 2).reshape(4, 3, 96, 96).numpy(), output, 1e-5, "5-D output")


# --- data path ---------------------------------------------------------------------------


@pytest.mark.reference
def test_boxes_padding_smoothing_and_coords_exact(data):
    padded, smoothed, coords, _faces, _frames = _face_path(data)
    np.testing.assert_array_equal(padded, data["boxes_padded_x1y1x2y2"])
    np.testing.assert_array_equal(smoothed, data["boxes_smoothed_y1y2x1x2"])
    np.testing.assert_array_equal(coords, data["coords_y1y2x1x2"])


@pytest.mark.reference
def test_crops_and_masked_face_input_exact(data):
    _padded, _smoothed, _coords, faces, _frames = _face_path(data)
    np.testing.assert_array_equal(faces, data["faces_uint8_bgr"])
    face_input = fw.network_faces_from_bgr(data["faces_uint8_bgr"]).numpy()
    assert face_input.dtype == np.float32
    np.testing.assert_array_equal(face_input, data["face_input"])
    # The RGB entry point flips once and lands on the same tensor.
    rgb = np.ascontiguousarray(data["faces_uint8_bgr"][..., ::-1])
    np.testing.assert_array_equal(fw.network_faces_from_rgb(rgb).numpy(), data["face_input"])


@pytest.mark.reference
def test_mel_input_is_the_audio_windows(data):
    mel = fixture(f"{PACK}/audio.npz")["mel"]
    windows = [mel[:, s:s + 16] for s in data["mel_chunk_start"]]
    np.testing.assert_array_equal(fw.network_mel(windows).numpy(), data["mel_input"])


@pytest.mark.reference
def test_output_uint8_and_paste_back(output, data):
    _padded, _smoothed, coords, _faces, frames = _face_path(data)
    # From the fixture's own output the conversion is exact; from ours within one level.
    np.testing.assert_array_equal(fw.network_output_to_uint8_bgr(data["output"]),
                                  data["output_uint8_bgr_hwc"])
    ours = fw.network_output_to_uint8_bgr(torch.from_numpy(output))
    assert_close(ours, data["output_uint8_bgr_hwc"], UINT8_ATOL, "output uint8")
    np.testing.assert_array_equal(fw.network_output_to_uint8_rgb(output), ours[..., ::-1])

    pasted = np.stack([fw.paste_face(f, p, c) for f, p, c in zip(frames, ours, coords, strict=True)])
    assert_close(pasted, data["pasted_frames_bgr"], UINT8_ATOL, "pasted frames")
    exact = np.stack([fw.paste_face(f, p, c) for f, p, c in
                      zip(frames, data["output_uint8_bgr_hwc"], coords, strict=True)])
    np.testing.assert_array_equal(exact, data["pasted_frames_bgr"])


# --- smoothing on short clips (no pack needed) ------------------------------------------

R1, R2 = [10, 20, 30, 40], [13, 21, 36, 47]


@pytest.mark.parametrize(
    ("boxes", "expected"),
    [
        # 1 box: the slice from -4 is the whole array, the box is its own mean.
        ([R2], [R2]),
        # 2 boxes: the whole array, in place: row 1 averages the already-smoothed row 0.
        ([R1, R2], [[11, 20, 33, 43], [12, 20, 34, 45]]),
        # 3 boxes: only the last two count; the first box is ignored entirely.
        ([[1, 2, 3, 4], R1, R2], [[11, 20, 33, 43], [11, 20, 33, 43], [12, 20, 34, 45]]),
        # 4 boxes: the slice from -1 is the last box alone, so every box becomes it.
        ([[1, 2, 3, 4], [5, 6, 7, 8], R1, R2], [R2, R2, R2, R2]),
    ],
    ids=["1", "2", "3", "4"],
)
def test_smoothing_short_clips(boxes, expected):
    before = np.array(boxes, dtype=np.int64)
    out = fw.smooth_boxes(before)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, np.array(expected, dtype=np.int64))
    np.testing.assert_array_equal(before, np.array(boxes))  # the caller's array is untouched


def test_smoothing_truncates_and_uses_replaced_rows():
    """Five boxes: row 0 is the plain mean (truncated); rows 1… re-read smoothed rows."""
    boxes = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [9, 9, 9, 9]])
    out = fw.smooth_boxes(boxes)
    # mean(0,1,1,1,9)=2.4 → 2; then mean(2,1,1,1,9)=2.8 → 2; mean(2,2,1,1,9)=3; (2,2,3,1,9)=3.4;
    # (2,2,3,3,9)=3.8.
    np.testing.assert_array_equal(out[:, 0], [2, 2, 3, 3, 3])


def test_batched_keeps_order_and_short_tail():
    assert [list(b) for b in fw.batched(list(range(5)), 2)] == [[0, 1], [2, 3], [4]]
