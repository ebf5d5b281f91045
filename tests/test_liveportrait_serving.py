"""The motion server with the LivePortrait engine on deterministic weights in the official
layout: it loads, animates the demo face, and names a missing or mismatched checkpoint."""

from __future__ import annotations

import io
import subprocess
import sys

import grpc
import numpy as np
import pytest
import torch

from talkinghead.local_stack import LocalStack
from talkinghead.orchestrator.stage_clients import MotionClient, open_channel, wait_for_serving
from talkinghead.services.motion import liveportrait_weights as lp
from talkinghead.services.motion.options import MotionOptions
from talkinghead.services.motion.template import load_template
from talkinghead.v1 import motion_pb2, motion_pb2_grpc


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    lp.write_deterministic_checkpoints(root, "talkinghead-a")
    return root


def serve_motion(stack: LocalStack, weights_dir, name: str) -> str:
    proc = stack.start_server("motion", 0, name, "--weights", str(weights_dir),
                              "--batch-size", "2")
    return f"127.0.0.1:{proc.port}"


def two_frame_template() -> bytes:
    talking = load_template("talking")
    buffer = io.BytesIO()
    np.savez(buffer, scale=talking.scale[38:41:2], R=talking.R[38:41:2], exp=talking.exp[38:41:2],
             t=talking.t[38:41:2], fps=np.asarray(talking.fps))
    return buffer.getvalue()


def test_official_layout_files(weights):
    for relative in lp.FILES.values():
        assert (weights / relative).is_file(), relative
    stitching = torch.load(weights / lp.FILES["stitching_retargeting_module"], weights_only=True)
    assert set(stitching) == {"retarget_shoulder", "retarget_mouth", "retarget_eye"}


def test_serves_and_animates_the_demo_face(weights, demo_face, tmp_path):
    stack = LocalStack(tmp_path, engine="liveportrait")
    try:
        target = serve_motion(stack, weights, "motion-lp")
        channel = open_channel(target)
        wait_for_serving(channel, "motion", target, 120)
        channel.close()
        client = MotionClient(target, "test-lp")
        info = client.engine_info()
        assert info.name == "liveportrait" and info.fingerprint.startswith("liveportrait-")
        frames, header = client.animate(demo_face.read_bytes(), two_frame_template(),
                                        MotionOptions(fps=20.0, normalize_lip=True), timeout=600)
        client.close()
        assert header.engine.name == "liveportrait"
        # no landmark models in these weights: lip normalisation is reported, not guessed
        assert not header.report.lip_normalized
        assert any("203-point landmarks" in note for note in header.report.notes)
        assert abs(header.report.motion_multiplier - 1.0) < 1e-5  # expression-friendly, photo
        assert len(frames) == 2 and frames[0].image.shape == (512, 512, 3)
        face = frames[0].face
        assert face is not None and face.crop_size == 256 and face.crop_transform.shape == (2, 3)
        photo = frames[0].image.astype(int)
        # the animated crop was pasted into the face region, the corners are the photo's own
        import cv2

        original = cv2.cvtColor(cv2.imread(str(demo_face)), cv2.COLOR_BGR2RGB).astype(int)
        x0, y0, x1, y1 = (int(v) for v in face.box)
        assert np.abs(photo[y0:y1, x0:x1] - original[y0:y1, x0:x1]).mean() > 5
        assert np.abs(photo[:20, -20:] - original[:20, -20:]).max() <= 1
    finally:
        stack.stop()


def test_missing_or_mismatched_checkpoint_is_named(weights, tmp_path, demo_face):
    broken = tmp_path / "weights"
    subprocess.run(["cp", "-r", str(weights), str(broken)], check=True)
    (broken / lp.FILES["spade_generator"]).unlink()
    state = torch.load(broken / lp.FILES["warping_module"], weights_only=True)
    state["fourth.weight"] = torch.zeros(3, 3)
    torch.save(state, broken / lp.FILES["warping_module"])

    verify = subprocess.run([sys.executable, "-m", "talkinghead.cli", "weights", "verify",
                             "--weights", str(broken)], capture_output=True, text=True, timeout=120)
    assert verify.returncode == 1
    assert "warping_module.pth: tensor 'fourth.weight' has shape (3, 3)" in verify.stderr

    (broken / lp.FILES["warping_module"]).unlink()
    stack = LocalStack(tmp_path / "logs", engine="liveportrait")
    try:
        target = serve_motion(stack, broken, "motion-broken")
        channel = open_channel(target)
        stub = motion_pb2_grpc.MotionServiceStub(channel)
        request = motion_pb2.AnimateRequest(image=demo_face.read_bytes(), template_name="talking")
        error = None
        for _ in range(100):  # until the load has failed
            try:
                list(stub.Animate(request, timeout=5))
            except grpc.RpcError as err:
                error = err
                if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    break
            import time

            time.sleep(0.2)
        channel.close()
        assert error is not None and error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "missing weights file" in error.details()
        assert "base_models/" in error.details()
    finally:
        stack.stop()


def test_engine_takes_the_official_crop_when_the_onnx_models_are_there(weights, tmp_path):
    pytest.importorskip("onnxruntime", reason="install the onnx extra")
    from talkinghead.services.motion.liveportrait_engine import LivePortraitEngine
    from tests.test_onnx_face import PHOTO_SHAPES, build_weights, photo

    shape = next(iter(PHOTO_SHAPES.values()))
    subprocess.run(["cp", "-r", str(weights), str(tmp_path / "w")], check=True)
    build_weights(tmp_path / "w", shape)
    engine = LivePortraitEngine(tmp_path / "w", "cpu")
    assert engine.face_analyzer is not None and engine.fingerprint.endswith("-onnxcrop")
    image = photo(shape, (90, 120, 150))
    face, crop = engine.locate(image)
    expected = engine.face_analyzer.official_crop(image)
    np.testing.assert_allclose(crop.matrix, expected.matrix)
    assert face.crop_size == 256
    plain = LivePortraitEngine(weights, "cpu")
    assert plain.face_analyzer is None and not plain.fingerprint.endswith("-onnxcrop")


def test_eye_and_lip_retargeting(weights, tmp_path):
    """Retargeting needs the landmark models and a template with openness ratios; then the
    driving keypoints are x_s plus the eye and lip MLP offsets (relative motion)."""
    pytest.importorskip("onnxruntime", reason="install the onnx extra")
    from talkinghead.services.common.errors import InputError
    from talkinghead.services.motion.keypoints import eye_open_ratios, lip_open_ratio
    from talkinghead.services.motion.liveportrait_engine import LivePortraitEngine
    from tests.reference_pack import require
    from tests.test_onnx_face import PHOTO_SHAPES, build_weights, photo

    wants = MotionOptions(fps=30.0, eye_retargeting=True, lip_retargeting=True)
    plain = LivePortraitEngine(weights, "cpu")
    shape = next(iter(PHOTO_SHAPES.values()))
    image = photo(shape, (90, 120, 150))
    with pytest.raises(InputError, match="landmark models"):
        next(plain.animate(image, load_template("talking"), wants))

    subprocess.run(["cp", "-r", str(weights), str(tmp_path / "w")], check=True)
    engine = LivePortraitEngine(build_weights(tmp_path / "w", shape), "cpu")
    with pytest.raises(InputError, match="carries no eye openness"):
        next(engine.animate(image, load_template("talking"), wants))

    d1 = load_template(str(require("liveportrait/templates/d1.npz")))
    ratios = engine._retargeting_ratios(image, d1, wants)
    lmk = engine.face_analyzer.analyze(image).landmarks_203
    np.testing.assert_allclose(ratios["eye"], eye_open_ratios(lmk))
    np.testing.assert_allclose(ratios["lip"], lip_open_ratio(lmk))
    x_s = torch.randn(2, 21, 3)
    x_d = torch.randn(2, 21, 3)
    with torch.inference_mode():
        got = engine._retarget(x_s, x_d, d1, slice(3, 5), ratios, relative=True)
        eye_in = torch.cat([x_s.reshape(2, -1), torch.tensor(
            [[*ratios["eye"], d1.eye_ratio[i, 0]] for i in (3, 4)], dtype=torch.float32)], 1)
        lip_in = torch.cat([x_s.reshape(2, -1), torch.tensor(
            [[*ratios["lip"], d1.lip_ratio[i, 0]] for i in (3, 4)], dtype=torch.float32)], 1)
        expected = (x_s + engine.nets.eye(eye_in).reshape(2, 21, 3)
                    + engine.nets.lip(lip_in).reshape(2, 21, 3))
        absolute = engine._retarget(x_s, x_d, d1, slice(3, 5), ratios, relative=False)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(absolute - x_d, expected - x_s)


def test_lip_normalisation_reads_the_photos_landmarks(weights, tmp_path):
    """With the landmark models the photo's lip-open ratio comes from its 203 landmarks and
    drives lip normalisation (driving.py, checked on the pack); without them there is no
    ratio, and the report says so instead of guessing."""
    pytest.importorskip("onnxruntime", reason="install the onnx extra")
    from talkinghead.services.motion.driving import prepare_source
    from talkinghead.services.motion.keypoints import DrivingFrame, KeypointInfo, lip_open_ratio
    from talkinghead.services.motion.liveportrait_engine import LivePortraitEngine, template_frames
    from tests.test_onnx_face import PHOTO_SHAPES, build_weights, photo

    shape = next(iter(PHOTO_SHAPES.values()))
    image = photo(shape, (90, 120, 150))
    wants = MotionOptions(normalize_lip=True)
    plain = LivePortraitEngine(weights, "cpu")
    assert plain._source_lip_ratio(image, wants) is None
    subprocess.run(["cp", "-r", str(weights), str(tmp_path / "w")], check=True)
    engine = LivePortraitEngine(build_weights(tmp_path / "w", shape), "cpu")
    assert engine._source_lip_ratio(image, MotionOptions()) is None  # not asked for
    ratio = engine._source_lip_ratio(image, wants)
    expected = float(lip_open_ratio(engine.face_analyzer.analyze(image).landmarks_203)[0])
    assert ratio == pytest.approx(expected)

    torch.manual_seed(0)
    info = KeypointInfo(pitch=torch.zeros(1, 1), yaw=torch.zeros(1, 1), roll=torch.zeros(1, 1),
                        R=torch.eye(3)[None], canonical=torch.randn(1, 21, 3) * 0.3,
                        exp=torch.zeros(1, 21, 3), scale=torch.ones(1, 1), t=torch.zeros(1, 3))
    first = template_frames(load_template("talking"), slice(0, 1), "cpu")
    assert isinstance(first, DrivingFrame)
    lip = engine.nets.lip
    with torch.inference_mode():
        none = prepare_source(info, first, wants.driving(), lip_ratio=None, lip_mlp=lip)
        opened = prepare_source(info, first, wants.driving(), lip_ratio=0.2, lip_mlp=lip)
        closed = prepare_source(info, first, wants.driving(), lip_ratio=0.01, lip_mlp=lip)
    assert none.lip_delta is None and "203-point landmarks" in none.notes[0]
    assert opened.lip_delta is not None and opened.notes == []
    assert closed.lip_delta is None and "below 0.03" in closed.notes[0]
