"""GFPGAN under torch.compile, restore's default on a CPU (``--compile auto``).

The compiled network must give the reference pack's outputs within the same tolerance as the
eager one (tests/test_reference_gfpgan.py), compile once at warm-up, and never again for a
chunk's short last batch (it is padded to the batch it was compiled for). One compile here,
about a minute on a 2-core CPU: the rest of the suite runs GFPGAN eager
(TALKINGHEAD_COMPILE=off in tests/conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.services.restore import gfpgan_weights as gw
from talkinghead.services.restore.face_tensors import face_to_input
from talkinghead.services.restore.gfpgan_engine import COMPILE_ENV, GFPGANEngine, compile_mode
from tests.reference_pack import fixture, salt_of
from tests.test_reference_gfpgan import assert_image_close


@pytest.mark.parametrize("asked, device, env, expected", [
    ("auto", "cpu", "", True),  # pays within the first video on a CPU (BENCHMARKS.md)
    ("auto", "cuda", "", False),  # not measured on a GPU yet
    ("auto", "mps", "", False),
    ("auto", "cpu", "off", False),
    ("auto", "cuda", "on", True),
    ("off", "cpu", "on", False),  # an explicit choice wins over the environment
    ("on", "cuda", "off", True),
    (False, "cpu", "", False),
])
def test_compile_mode(monkeypatch, asked, device, env, expected):
    monkeypatch.setenv(COMPILE_ENV, env)
    assert compile_mode(asked, device) is expected


def test_compile_mode_refuses_other_values(monkeypatch):
    with pytest.raises(ValueError, match="auto, on or off"):
        compile_mode("yes", "cpu")
    monkeypatch.setenv(COMPILE_ENV, "sometimes")
    with pytest.raises(ValueError, match=f"{COMPILE_ENV} must be on or off"):
        compile_mode("auto", "cpu")


def test_compiled_network_is_the_reference_network(tmp_path):
    data = fixture("gfpgan/gfpgan.npz")
    gw.write_deterministic_checkpoints(tmp_path, salt_of(data))
    engine = GFPGANEngine(tmp_path, "cpu", batch_size=2, compile_network="on")
    assert engine.compiled and engine.compile_seconds == 0.0
    engine.warmup()
    assert engine.compiled, "the compile failed (see the log): the replica fell back to eager"
    assert engine.compile_seconds > 0
    # made under inference mode, as the engine makes its batches (another tensor kind would
    # be a guard failure, so a recompile)
    with torch.inference_mode(), torch._dynamo.config.patch(error_on_recompile=True):
        one = face_to_input(data["input_bgr_u8"], "bgr")
        two = face_to_input(np.stack([data["input_bgr_u8"], data["input2_bgr_u8"]]), "bgr")
        single = engine.run_network(one)  # a short batch: padded, not compiled again
        pair = engine.run_network(two)
    assert single.shape == (1, 3, 512, 512)
    assert_image_close(single, data["out_image"], "compiled out_image")
    assert_image_close(pair, data["out_image_batch2"], "compiled out_image_batch2")
