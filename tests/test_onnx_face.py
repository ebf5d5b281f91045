"""The official LivePortrait crop through onnxruntime, on synthetic stand-in models.

The real InsightFace / LivePortrait ONNX files are not available here, so the tests build
models with the same input and output names and shapes whose outputs we design: the SCRFD
stand-in emits fixed distances at chosen anchors (so decoding must give back the boxes
and key points we placed in the photo), and the landmark stand-ins emit the normalised
coordinates that the upstream preprocessing must map back to points we chose. Some
outputs also read one input pixel, so a wrong colour order, normalisation or letterbox
moves a score or a landmark and fails a test.

Expected values are worked out here by hand from the upstream formulas (InsightFace's
RetinaFace/Landmark, LivePortrait's crop.py), not with the module's own helpers.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx builds the synthetic models; install the onnx extra")
pytest.importorskip("onnxruntime", reason="onnxruntime runs the official crop; install the onnx extra")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from talkinghead.services.motion.onnx_face import (  # noqa: E402
    DETECTOR_FILE,
    LANDMARK_106_FILE,
    LANDMARK_203_FILE,
    OnnxFaceAnalyzer,
    crop_from_landmarks,
)

DET = 512  # LivePortrait's det_size
RED, BLUE = (255, 0, 0), (0, 0, 255)

# Faces placed in the photo (pixels), and where the detector stand-in reports each one.
# A is the big face; B overlaps it with a lower score (NMS must drop it); C and D are small.
# C's score is the red channel of letterboxed pixel (0, 0) (photo content), D's minus the
# red channel of pixel (511, 511) (black padding for both photo shapes).
FACES = {
    "A": {"box": (200.0, 250.0, 400.0, 510.0), "stride": 32, "anchor": 1, "score": 0.8,
          "kps": [(250, 330), (350, 330), (300, 390), (262, 450), (338, 450)]},
    "B": {"box": (205.0, 255.0, 402.0, 515.0), "stride": 16, "anchor": 0, "score": 0.6,
          "kps": [(253, 333), (353, 333), (303, 393), (265, 453), (341, 453)]},
    "C": {"box": (470.0, 60.0, 560.0, 160.0), "stride": 8, "anchor": 1, "probe": (0, 0, 1.0),
          "kps": [(495, 95), (535, 95), (515, 115), (500, 135), (530, 135)]},
    "D": {"box": (40.0, 600.0, 110.0, 700.0), "stride": 8, "anchor": 0, "probe": (511, 511, -1.0),
          "kps": [(58, 630), (92, 630), (75, 650), (62, 675), (88, 675)]},
}
NORMALISED_255 = (255 - 127.5) / 128  # what a full channel becomes after SCRFD's mean/std
PHOTO_SHAPES = {"landscape": (768, 1024), "portrait": (900, 600)}

EYES_LIP_106 = ((33, 35, 40, 39), (87, 89, 94, 93), (52, 61))
EYES_LIP_203 = ((0, 6, 12, 18), (24, 30, 36, 42), (48, 66))


def det_scale(shape: tuple[int, int]) -> float:
    """InsightFace's letterbox scale into a DET x DET input."""
    rows, cols = shape
    if rows / cols > 1.0:
        return DET / rows
    return int(DET * rows / cols) / rows


def upright_face(count: int, layout, seed: int) -> np.ndarray:
    """Landmarks of an upright face in box A: eyes level, lip centre under the eye centre."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform((215.0, 265.0), (385.0, 495.0), size=(count, 2))
    left, right, lip = layout
    for centre, idx in (((250.0, 330.0), left), ((350.0, 330.0), right)):
        pts[list(idx)] = np.array(centre) + [(-12, 0), (12, 0), (0, -4), (0, 4)]
    pts[list(lip)] = [(275.0, 450.0), (325.0, 450.0)]
    return pts


POINTS_106 = upright_face(106, EYES_LIP_106, seed=1)
POINTS_203 = upright_face(203, EYES_LIP_203, seed=2)


def upright_crop(points: np.ndarray, size: int, scale: float, shift_y: float) -> np.ndarray:
    """LivePortrait's crop of an upright face: axes = photo axes, side = scale x the larger
    extent, centre = the extent's centre moved shift_y sides down."""
    low, high = points.min(axis=0), points.max(axis=0)
    side = scale * (high - low).max()
    centre = (low + high) / 2 + np.array([0.0, shift_y * side])
    s = size / side
    return np.array([[s, 0.0, size / 2 - s * centre[0]], [0.0, s, size / 2 - s * centre[1]]])


def box_crop_106(box) -> np.ndarray:
    """InsightFace Landmark.get: centre the box, scale its longer side x1.5 to 192 px."""
    x0, y0, x1, y1 = box
    s = 192 / (max(x1 - x0, y1 - y0) * 1.5)
    return np.array([[s, 0.0, 96 - s * (x0 + x1) / 2], [0.0, s, 96 - s * (y0 + y1) / 2]])


def through(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


# ---------------------------------------------------------------- synthetic models


def _init(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def _save(path, nodes, inputs, outputs, inits) -> None:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _probe(nodes, inits, source: str, flat_index: int, name: str) -> str:
    """A [N, 1] tensor: element ``flat_index`` of each image of ``source`` (channel 0 first)."""
    inits.append(numpy_helper.from_array(np.array([flat_index], np.int64), f"{name}_index"))
    nodes += [helper.make_node("Flatten", [source], [f"{name}_flat"], axis=1),
              helper.make_node("Gather", [f"{name}_flat", f"{name}_index"], [name], axis=1)]
    return name


def build_detector(path, shape: tuple[int, int]) -> None:
    """det_10g's interface: 'input.1' [1, 3, ?, ?] → scores, boxes, key points per stride
    (8, 16, 32), flattened per anchor, in that output order and under det_10g's names."""
    scale = det_scale(shape)
    nodes, inits = [], []
    probes = {}
    for key, face in FACES.items():
        if "probe" in face:
            y, x, _ = face["probe"]
            probes[key] = _probe(nodes, inits, "input.1", y * DET + x, f"probe_{key}")
    names = (("448", "471", "494"), ("451", "474", "497"), ("454", "477", "500"))
    outputs = []
    for level, stride in enumerate((8, 16, 32)):
        cols = DET // stride
        count = cols * cols * 2
        base, boxes, kps = np.zeros((count, 1)), np.zeros((count, 4)), np.zeros((count, 10))
        score_name = f"base_{stride}"
        for key, face in FACES.items():
            if face["stride"] != stride:
                continue
            box = np.array(face["box"]) * scale
            cell = (((box[:2] + box[2:]) / 2) // stride).astype(int)
            anchor = (cell[1] * cols + cell[0]) * 2 + face["anchor"]
            centre = cell * stride
            boxes[anchor] = np.concatenate([centre - box[:2], box[2:] - centre]) / stride
            kps[anchor] = ((np.array(face["kps"]) * scale - centre) / stride).ravel()
            if "probe" in face:
                mask = np.zeros((count, 1))
                mask[anchor] = face["probe"][2]
                inits.append(_init(f"mask_{key}", mask))
                nodes += [helper.make_node("Mul", [f"mask_{key}", probes[key]], [f"term_{key}"]),
                          helper.make_node("Add", [score_name, f"term_{key}"], [f"with_{key}"])]
                score_name = f"with_{key}"
            else:
                base[anchor] = face["score"]
        inits += [_init(f"base_{stride}", base), _init(f"boxes_{stride}", boxes),
                  _init(f"kps_{stride}", kps)]
        nodes += [helper.make_node("Identity", [score_name], [names[0][level]]),
                  helper.make_node("Identity", [f"boxes_{stride}"], [names[1][level]]),
                  helper.make_node("Identity", [f"kps_{stride}"], [names[2][level]])]
        outputs.append((level, stride, count))
    out_infos = [helper.make_tensor_value_info(names[kind][level], TensorProto.FLOAT, [count, width])
                 for kind, width in enumerate((1, 4, 10)) for level, _, count in outputs]
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])
    _save(path, nodes, [image], out_infos, inits)


def build_landmark_106(path) -> None:
    """2d106det's interface: 'data' [N, 3, 192, 192] → 'fc1' [N, 212] in [-1, 1].

    Emits POINTS_106 as seen in box A's 192 px patch, plus (red at the centre - 255): zero
    only if the patch holds raw 0..255 RGB."""
    patch = through(box_crop_106(FACES["A"]["box"]), POINTS_106)
    nodes, inits = [], [_init("points", (patch / 96 - 1).reshape(1, 212)), _init("full", [255.0])]
    probe = _probe(nodes, inits, "data", 96 * 192 + 96, "red")
    nodes += [helper.make_node("Sub", [probe, "full"], ["error"]),
              helper.make_node("Add", ["points", "error"], ["fc1"])]
    image = helper.make_tensor_value_info("data", TensorProto.FLOAT, ["None", 3, 192, 192])
    out = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["None", 212])
    _save(path, nodes, [image], [out], inits)


def build_landmark_203(path) -> None:
    """landmark.onnx's interface: 'input' [1, 3, 224, 224] → three outputs, the third the
    203 points [1, 406] normalised to the crop; (red at the centre - 1) is added, zero only
    for RGB in 0..1. (The first two outputs are not used upstream; their shapes here are
    placeholders.)"""
    crop = through(upright_crop(POINTS_106, 224, 1.5, -0.1), POINTS_203)
    nodes = []
    inits = [_init("points", (crop / 224).reshape(1, 406)), _init("one", [1.0]),
             _init("first", np.zeros((1, 6))), _init("second", np.zeros((1, 12)))]
    probe = _probe(nodes, inits, "input", 112 * 224 + 112, "red")
    nodes += [helper.make_node("Sub", [probe, "one"], ["error"]),
              helper.make_node("Add", ["points", "error"], ["output_2"]),
              helper.make_node("Identity", ["first"], ["output_0"]),
              helper.make_node("Identity", ["second"], ["output_1"])]
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, w])
            for n, w in (("output_0", 6), ("output_1", 12), ("output_2", 406))]
    _save(path, nodes, [image], outs, inits)


def build_weights(root, shape: tuple[int, int]):
    build_detector(root / DETECTOR_FILE, shape)
    build_landmark_106(root / LANDMARK_106_FILE)
    build_landmark_203(root / LANDMARK_203_FILE)
    return root


@pytest.fixture(scope="module", params=sorted(PHOTO_SHAPES))
def case(request, tmp_path_factory):
    shape = PHOTO_SHAPES[request.param]
    root = build_weights(tmp_path_factory.mktemp(f"weights-{request.param}"), shape)
    analyzer = OnnxFaceAnalyzer.from_weights_dir(root, providers=["CPUExecutionProvider"])
    assert analyzer is not None
    return analyzer, shape


def photo(shape: tuple[int, int], colour) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (*shape, 3)).copy()


# ---------------------------------------------------------------- loading


def test_loads_the_official_layout(case):
    analyzer, _ = case
    assert analyzer.det_input == (DET, DET)
    assert analyzer.landmark_106_size == 192 and analyzer.landmark_203_size == 224


@pytest.mark.parametrize("missing", [DETECTOR_FILE, LANDMARK_106_FILE, LANDMARK_203_FILE])
def test_missing_file_falls_back(tmp_path, caplog, missing):
    build_weights(tmp_path, PHOTO_SHAPES["landscape"])
    (tmp_path / missing).unlink()
    with caplog.at_level(logging.INFO, logger="talkinghead.services.motion.onnx_face"):
        assert OnnxFaceAnalyzer.from_weights_dir(tmp_path) is None
    assert missing.split("/")[-1] in caplog.text


def test_no_weights_dir_or_broken_file_falls_back(tmp_path, caplog):
    assert OnnxFaceAnalyzer.from_weights_dir(None) is None
    build_weights(tmp_path, PHOTO_SHAPES["landscape"])
    (tmp_path / LANDMARK_203_FILE).write_bytes(b"not an onnx model")
    with caplog.at_level(logging.INFO, logger="talkinghead.services.motion.onnx_face"):
        assert OnnxFaceAnalyzer.from_weights_dir(tmp_path) is None
    assert "cannot load" in caplog.text


def test_without_onnxruntime_falls_back(tmp_path, caplog, monkeypatch):
    build_weights(tmp_path, PHOTO_SHAPES["landscape"])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with caplog.at_level(logging.INFO, logger="talkinghead.services.motion.onnx_face"):
        assert OnnxFaceAnalyzer.from_weights_dir(tmp_path) is None
    assert "onnxruntime is not installed" in caplog.text


# ---------------------------------------------------------------- SCRFD


def _assert_face(found, key):
    face = FACES[key]
    np.testing.assert_allclose(found.box, face["box"], atol=1e-3)
    np.testing.assert_allclose(found.kps, np.array(face["kps"], float), atol=1e-3)
    expected = NORMALISED_255 if "probe" in face else face["score"]
    assert found.score == pytest.approx(expected, abs=1e-6)


def test_scrfd_decodes_the_designed_faces(case):
    analyzer, shape = case
    found = analyzer.detect(photo(shape, RED))
    # B is suppressed by A; the rest come largest first (score order would be C, D, A)
    assert len(found) == 3
    for detection, key in zip(found, "ACD", strict=True):
        _assert_face(detection, key)


def test_detector_sees_rgb_on_a_black_letterbox(case):
    analyzer, shape = case
    # C's score is the red channel: a blue photo (what a BGR mix-up feeds) hides it, and
    # D, which needs black at the far corner of the input, is still there.
    found = analyzer.detect(photo(shape, BLUE))
    assert len(found) == 2
    _assert_face(found[0], "A")
    _assert_face(found[1], "D")


# ---------------------------------------------------------------- landmarks


def test_landmarks_106_map_back_to_the_photo(case):
    analyzer, shape = case
    points = analyzer.landmarks_106(photo(shape, RED), FACES["A"]["box"])
    np.testing.assert_allclose(points, POINTS_106, atol=1e-3)
    wrong = analyzer.landmarks_106(photo(shape, BLUE), FACES["A"]["box"])
    assert np.abs(wrong - POINTS_106).max() > 100  # the probe works: colour order matters


def test_landmarks_203_map_back_to_the_photo(case):
    analyzer, shape = case
    points = analyzer.landmarks_203(photo(shape, RED), POINTS_106)
    np.testing.assert_allclose(points, POINTS_203, atol=1e-3)
    wrong = analyzer.landmarks_203(photo(shape, BLUE), POINTS_106)
    assert np.abs(wrong - POINTS_203).max() > 100


# ---------------------------------------------------------------- the crop


def test_official_crop_from_the_106_points(case):
    analyzer, shape = case
    face = analyzer.analyze(photo(shape, RED))
    assert face is not None
    np.testing.assert_allclose(face.landmarks_106, POINTS_106, atol=1e-3)
    np.testing.assert_allclose(face.landmarks_203, POINTS_203, atol=1e-3)
    crop = analyzer.official_crop(photo(shape, RED))
    assert crop.size == 256
    low, high = POINTS_106.min(axis=0), POINTS_106.max(axis=0)
    side = 2.3 * (high - low).max()
    # the landmarks' centre lands 0.125 of the side below the crop centre, at 256 / side
    np.testing.assert_allclose(through(crop.matrix, ((low + high) / 2)[None])[0],
                               (128.0, 128.0 + 0.125 * 256), atol=1e-3)
    np.testing.assert_allclose(crop.matrix[:, :2], np.eye(2) * 256 / side, atol=1e-6)
    # at 512 it is upstream's M_o2c
    np.testing.assert_allclose(crop.scaled(512).matrix, upright_crop(POINTS_106, 512, 2.3, -0.125),
                               atol=1e-4)
    geometry = face.geometry
    np.testing.assert_allclose(geometry.box, FACES["A"]["box"], atol=1e-3)
    np.testing.assert_allclose(geometry.landmarks, np.array(FACES["A"]["kps"]), atol=1e-3)
    assert geometry.crop_size == 256 and geometry.crop_transform.shape == (2, 3)


def test_no_face_gives_no_crop(tmp_path):
    analyzer = OnnxFaceAnalyzer.from_weights_dir(build_weights(tmp_path, PHOTO_SHAPES["landscape"]))
    analyzer.det_thresh = 1.0  # above every designed score
    assert analyzer.detect(photo(PHOTO_SHAPES["landscape"], RED)) == []
    assert analyzer.analyze(photo(PHOTO_SHAPES["landscape"], RED)) is None
    assert analyzer.official_crop(photo(PHOTO_SHAPES["landscape"], RED)) is None


def test_crop_from_203_points():
    crop = crop_from_landmarks(POINTS_203)
    np.testing.assert_allclose(crop.matrix, upright_crop(POINTS_203, 256, 2.3, -0.125), atol=1e-6)


@pytest.mark.parametrize("degrees", [-30.0, 12.0, 90.0])
def test_crop_turns_with_the_face(degrees):
    """A tilted face gets the upright face's crop, turned with it (so the eyes come out
    level): the tilted crop of the tilted points equals the upright crop of the originals."""
    theta = np.deg2rad(degrees)
    turn = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pivot = np.array([310.0, 370.0])
    tilted = (POINTS_106 - pivot) @ turn.T + pivot
    upright = crop_from_landmarks(POINTS_106).matrix
    turned = crop_from_landmarks(tilted).matrix
    probe_points = np.array([[0.0, 0.0], [300.0, 380.0], [640.0, 90.0], [120.0, 700.0]])
    np.testing.assert_allclose(through(turned, (probe_points - pivot) @ turn.T + pivot),
                               through(upright, probe_points), atol=1e-6)
