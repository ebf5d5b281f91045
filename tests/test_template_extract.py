"""`talkinghead template extract`: a driving video → a template, with the motion extractor
on deterministic weights in the official layout."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from talkinghead.services.motion import liveportrait_weights as lp
from talkinghead.services.motion.template import load_template
from tests.reference_pack import require

# Not an equivalence test (no -m reference), but it needs the pack's driving video.


def test_extract_d13(tmp_path):
    video = require("liveportrait/templates/d13.mp4")
    weights = tmp_path / "weights"
    lp.write_deterministic_checkpoints(weights, "talkinghead-a")
    out = tmp_path / "d13.npz"
    proc = subprocess.run(
        [sys.executable, "-m", "talkinghead.cli", "template", "extract", str(video), "-o",
         str(out), "--weights", str(weights), "--device", "cpu"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "352 frames at 30 fps" in proc.stdout
    template = load_template(str(out))
    assert template.n_frames == 352 and template.fps == 30.0
    assert template.R.shape == (352, 3, 3) and template.exp.shape == (352, 21, 3)
    assert template.scale.shape == (352, 1) and template.t.shape == (352, 3)
    eye = np.einsum("nij,nkj->nik", template.R, template.R)
    np.testing.assert_allclose(eye, np.broadcast_to(np.eye(3), eye.shape), atol=1e-4)
    assert np.std(template.exp, axis=0).max() > 0  # the frames differ: motion was measured


def test_extract_without_weights_is_a_clear_error(tmp_path):
    video = require("liveportrait/templates/d13.mp4")
    proc = subprocess.run(
        [sys.executable, "-m", "talkinghead.cli", "template", "extract", str(video), "-o",
         str(tmp_path / "x.npz"), "--weights", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert "missing weights file" in proc.stderr and "motion_extractor.pth" in proc.stderr
    assert not (tmp_path / "x.npz").exists()
