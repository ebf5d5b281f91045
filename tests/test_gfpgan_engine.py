"""The GFPGAN restore engine on deterministic weights in the official layout: the whole
enhance path and the parse-mask paste-back against gfpgan_pipeline.npz, batching, serving,
and the refusal to swap the official mask for another one silently."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from talkinghead.local_stack import LocalStack
from talkinghead.orchestrator.stage_clients import RestoreClient, open_channel, wait_for_serving
from talkinghead.services.common.errors import WeightsError
from talkinghead.services.common.frames import FaceGeometry, VideoFrame
from talkinghead.services.restore import face_align as fa
from talkinghead.services.restore import gfpgan_weights as gw
from talkinghead.services.restore.face_parsing import parse
from talkinghead.services.restore.gfpgan_engine import GFPGANEngine
from tests.reference_pack import assert_close, fixture, salt_of

# The pack's check for the pasted frames (gfpgan/README.md, "Recommended tolerances"): no
# value more than 2 counts off, and at most 2 % of the values off at all.
OUTPUT_MAX_COUNTS = 2
OUTPUT_MAX_FRACTION = 0.02
PARSE_MASK_ATOL = 1e-2  # the pack's check for soft_mask_*_parse


@pytest.fixture(scope="module")
def pipe():
    return fixture("gfpgan/gfpgan_pipeline.npz")


@pytest.fixture(scope="module")
def weights(tmp_path_factory, pipe):
    root = tmp_path_factory.mktemp("gfpgan-weights")
    gw.write_deterministic_checkpoints(root, salt_of(pipe))
    return root


@pytest.fixture(scope="module")
def engine(weights):
    return GFPGANEngine(weights, "cpu", batch_size=2)


def pipeline_frame(pipe, index: int = 0) -> VideoFrame:
    rgb = np.ascontiguousarray(pipe["frame_bgr_u8"][..., ::-1])
    lm = pipe["landmarks_5"].astype(np.float32)
    box = (*lm.min(axis=0), *lm.max(axis=0))
    return VideoFrame(index, rgb, FaceGeometry(box=tuple(float(v) for v in box), landmarks=lm))


@pytest.fixture(scope="module")
def restored_full(engine, pipe) -> np.ndarray:
    """The engine's frame at weight 1 (the official path), our own crop: RGB."""
    return engine.restore([pipeline_frame(pipe)], weight=1.0)[0].image


@pytest.fixture(scope="module")
def pack_face_classes(engine, pipe) -> np.ndarray:
    """Our parser's classes of the pack's restored face, as GFPGANer parses its own."""
    return parse(engine.parser, pipe["restored_face_bgr_u8"], "bgr")[0]


def same_geometry(a: FaceGeometry | None, b: FaceGeometry | None) -> bool:
    """The face geometry came back as sent (restore must not move it)."""
    if a is None or b is None:
        return a is b
    return (np.allclose(a.box, b.box, atol=1e-4)
            and np.array_equal(np.asarray(a.landmarks), np.asarray(b.landmarks)))


def output_diff(ours: np.ndarray, expected: np.ndarray) -> tuple[int, float]:
    """(max counts off, fraction of values off) of two uint8 frames of the same shape."""
    assert ours.shape == expected.shape and ours.dtype == np.uint8
    diff = np.abs(ours.astype(int) - expected.astype(int))
    return int(diff.max()), float((diff > 0).mean())


@pytest.mark.reference
def test_enhance_path_matches_the_official_one(restored_full, pipe):
    """Geometry in, the official default path out (parse mask, upscale 1), weight 1: our
    alignment, crop, network, parser and paste-back together, within the pack's bounds."""
    worst, fraction = output_diff(restored_full[..., ::-1], pipe["output_up1_parse_bgr_u8"])
    assert worst <= OUTPUT_MAX_COUNTS, f"a value is {worst} counts off"
    assert fraction <= OUTPUT_MAX_FRACTION, f"{fraction:.3%} of values differ"
    # and the face really was restored: the frame moved well beyond those differences
    assert np.abs(restored_full.astype(int) - pipe["frame_bgr_u8"][..., ::-1]).mean() > 1


@pytest.mark.reference
@pytest.mark.parametrize("up", [1, 2])
def test_parse_soft_mask_matches_the_pack(pipe, pack_face_classes, up):
    """The default mask from our parser's classes of the pack's restored face, warped onto
    the upscaled canvas by the inverse of our alignment."""
    height, width = (s * up for s in pipe["frame_bgr_u8"].shape[:2])
    inverse = fa.inverse_matrix(fa.alignment_matrix(pipe["landmarks_5"]), up)
    mask = fa.parse_soft_mask(pack_face_classes, inverse, height, width)
    assert_close(mask, pipe[f"soft_mask_up{up}_parse"], PARSE_MASK_ATOL,
                 f"soft_mask_up{up}_parse")


@pytest.mark.reference
@pytest.mark.parametrize("up", [1, 2])
def test_parse_paste_back_matches_the_pack(pipe, pack_face_classes, up):
    """GFPGANer's default paste-back at upscale 1 and 2 (the engine works at 1): LANCZOS
    canvas, inverse with the half-pixel shift, parse mask, truncating blend."""
    background = fa.upscaled_background(pipe["frame_bgr_u8"], up)
    inverse = fa.inverse_matrix(fa.alignment_matrix(pipe["landmarks_5"]), up)
    out = fa.paste_face(background, pipe["restored_face_bgr_u8"], inverse, pack_face_classes,
                        upscale=up)
    worst, fraction = output_diff(out, pipe[f"output_up{up}_parse_bgr_u8"])
    assert worst <= OUTPUT_MAX_COUNTS, f"a value is {worst} counts off"
    assert fraction <= OUTPUT_MAX_FRACTION, f"{fraction:.3%} of values differ"


def test_a_chunk_is_one_batch_and_keeps_order(engine, pipe, restored_full):
    frames = [pipeline_frame(pipe, i) for i in (5, 3, 9)]
    out = engine.restore(frames, weight=0.5)
    assert [f.index for f in out] == [5, 3, 9]
    assert all(same_geometry(o.face, f.face) for o, f in zip(out, frames, strict=True))
    # frame 9 went through the network in another batch (size 2): equal up to float noise
    assert np.abs(out[0].image.astype(int) - out[1].image.astype(int)).max() <= 1
    assert np.abs(out[0].image.astype(int) - out[2].image.astype(int)).max() <= 2
    # weight 0.5 blends toward the input: half way between the frame and the full result
    frame = frames[0].image.astype(int)
    half, full = out[0].image.astype(int), restored_full.astype(int)
    moved = np.abs(full - frame) > 20  # 40 % of the values here
    assert moved.mean() > 0.1
    # measured 54 and 35 counts: neither end, though not the exact middle (the crop comes
    # back through two bilinear warps, and the blend truncates)
    assert np.abs(half - full)[moved].mean() > 10
    assert np.abs(half - frame)[moved].mean() > 10


def test_served_restore_replica(weights, pipe, restored_full, tmp_path):
    """A served replica gives the in-process engine's frames, in the order sent, one per
    frame sent; a frame in which no face is found comes back unchanged."""
    stack = LocalStack(tmp_path, engine="gfpgan")
    port = stack.start_server("restore", 0, "restore-gfpgan", "--weights", str(weights),
                              "--batch-size", "2").port
    target = f"127.0.0.1:{port}"
    faceless = VideoFrame(8, np.ascontiguousarray(pipe["frame_bgr_u8"][..., ::-1]))
    sent = [pipeline_frame(pipe, 7), faceless]
    try:
        channel = open_channel(target)
        wait_for_serving(channel, "restore", target, 180)
        channel.close()
        client = RestoreClient(target, "test-gfpgan")
        out = client.restore(sent, weight=1.0, timeout=300)
        client.close()
    finally:
        stack.stop()
    assert client.engine.name == "gfpgan"
    assert [f.index for f in out] == [7, 8]
    assert same_geometry(out[0].face, sent[0].face) and out[1].face is None
    # another process, maybe other thread counts: float noise moves at most a count
    diff = np.abs(out[0].image.astype(int) - restored_full.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.001, (diff.max(), (diff > 0).mean())
    assert np.array_equal(out[1].image, faceless.image)


def test_frame_without_geometry_goes_through_the_detector(engine, pipe, monkeypatch):
    """No geometry: RetinaFace runs; deterministic weights never reach GFPGANer's 0.97
    score, so no face is found and the frame comes back unchanged (restore is best-effort)."""
    from talkinghead.services.restore import retinaface_detect

    calls = []
    detect = retinaface_detect.detect

    def counted(net, image, order):
        calls.append((image, detect(net, image, order)))
        return calls[-1][1]

    monkeypatch.setattr(retinaface_detect, "detect", counted)
    rgb = np.ascontiguousarray(pipe["frame_bgr_u8"][..., ::-1])
    out = engine.restore([VideoFrame(3, rgb)], weight=1.0)
    assert len(calls) == 1 and calls[0][0] is rgb and len(calls[0][1]) == 0
    assert [f.index for f in out] == [3] and np.array_equal(out[0].image, rgb)


def parser_missing(weights, root):
    """A weights folder with the restorer and detector of ``weights`` but no face parser."""
    for key in ("gfpgan_v1.4", "retinaface"):
        (root / gw.FILES[key]).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(weights / gw.FILES[key], root / gw.FILES[key])
    assert not (root / gw.FILES["parsenet"]).exists()
    return root


def test_parse_mask_without_the_parser_is_refused(weights, tmp_path):
    """Asked for the official mask without its file: a WeightsError naming the file and
    where it comes from, not the square mask in its place."""
    root = parser_missing(weights, tmp_path)
    with pytest.raises(WeightsError) as info:
        GFPGANEngine(root, "cpu", paste_mask="parse")
    message = str(info.value)
    assert str(root / gw.FILES["parsenet"]) in message
    assert "facexlib/releases/download/v0.2.2/parsing_parsenet.pth" in message


def test_auto_mask_without_the_parser_falls_back_and_says_so(weights, tmp_path, caplog):
    root = parser_missing(weights, tmp_path)
    with caplog.at_level(logging.INFO, logger="talkinghead.services.restore.gfpgan_engine"):
        built = GFPGANEngine(root, "cpu", paste_mask="auto")
    assert built.parser is None and not built.use_parser
    assert f"square (no face parser file {root / gw.FILES['parsenet']})" in caplog.text


def test_device_path_is_the_host_path(engine, pipe, weight=0.5):
    """The per-frame work as torch ops (device_paste.py; the engine's default on cuda and
    mps) gives the host path's frames on this CPU, across two batches: bit for bit but
    where the mask blurred on the device truncates a blend the other way (its bound,
    tests/test_device_paste.py). Weight 1 (no blend) on the device: test_presenter_mask."""
    from tests.test_device_paste import BLURRED_MASK_COUNTS, BLURRED_MASK_SHARE

    frames = [pipeline_frame(pipe, i) for i in (2, 4, 6)]
    host = engine.restore_on_host(frames, weight=weight)
    device = engine.restore_on_device(frames, weight=weight)
    assert [f.index for f in device] == [2, 4, 6]
    for a, b, given in zip(host, device, frames, strict=True):
        off = np.abs(a.image.astype(int) - b.image.astype(int))
        assert off.max() <= BLURRED_MASK_COUNTS and (off > 0).mean() <= BLURRED_MASK_SHARE
        assert not np.array_equal(b.image, given.image)  # restored, not passed through
    assert not engine.device_paste  # the host path stays the default on a CPU
