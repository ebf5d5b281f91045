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
FRAMES = 48


def test_extract_d13(tmp_path):
    """The pack's driving video d13, cut to its first FRAMES frames (the extractor's cost is
    per frame; what it does to each one is the same), at its own frame rate."""
    from talkinghead.services.common.audio import ffmpeg_exe
    from talkinghead.services.common.video_files import read_video

    video = tmp_path / "d13-start.mp4"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i",
                    str(require("liveportrait/templates/d13.mp4")), "-frames:v", str(FRAMES),
                    "-c:v", "libx264", "-crf", "12", str(video)], check=True)
    fps, frames = read_video(video)
    assert sum(1 for _ in frames) == FRAMES and fps == 30.0
    weights = tmp_path / "weights"
    lp.write_deterministic_checkpoints(weights, "talkinghead-a")
    out = tmp_path / "d13.npz"
    proc = subprocess.run(
        [sys.executable, "-m", "talkinghead.cli", "template", "extract", str(video), "-o",
         str(out), "--weights", str(weights), "--device", "cpu"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{FRAMES} frames at {fps:g} fps" in proc.stdout
    template = load_template(str(out))
    assert template.n_frames == FRAMES and template.fps == fps
    assert template.R.shape == (FRAMES, 3, 3) and template.exp.shape == (FRAMES, 21, 3)
    assert template.scale.shape == (FRAMES, 1) and template.t.shape == (FRAMES, 3)
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
