"""`talkinghead weights list` shows each weight file's licence beside it (#14, model licences).

Run through the real command line, as an operator runs it.
"""

from __future__ import annotations

import subprocess

from talkinghead.local_stack import cli_command
from talkinghead.weights_cli import expected_files
from talkinghead.weights_licences import BY_FILE


def weights_list(weights_dir) -> list[str]:
    done = subprocess.run(cli_command("weights", "list", "--weights", str(weights_dir)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_every_catalogued_file_has_a_licence_and_only_those():
    paths = [f.path for f in expected_files()]
    assert len(paths) == len(set(paths))
    assert set(paths) == set(BY_FILE)
    for f in expected_files():
        assert f.licence.weights and f.licence.code
        assert f.licence.source.startswith("https://")


def test_weights_list_prints_the_licence_beside_each_file(tmp_path):
    present = tmp_path / "gfpgan" / "GFPGANv1.4.pth"
    present.parent.mkdir(parents=True)
    present.write_bytes(b"not read by list")
    lines = weights_list(tmp_path)
    catalogue = expected_files()
    for f in catalogue:
        [at] = [i for i, line in enumerate(lines) if f" {f.path}  (" in line]
        state = "present" if f.path == "gfpgan/GFPGANv1.4.pth" else "MISSING"
        assert lines[at].split()[:3] == [f.stage, f.engine, state]
        licence = lines[at + 1].strip()
        assert licence == f"licence: {f.licence.text()}"


def test_the_published_statements_are_the_ones_listed(tmp_path):
    """Spot checks against the publishers' own words (README 'Model licences' quotes them)."""
    text = "\n".join(weights_list(tmp_path))

    def licence_of(path: str) -> str:
        lines = text.splitlines()
        [at] = [i for i, line in enumerate(lines) if f" {path}  (" in line]
        return lines[at + 1]

    assert "non-commercial research purposes only" in licence_of(
        "insightface/models/buffalo_l/det_10g.onnx")
    assert "non-commercial research purposes only" in licence_of(
        "insightface/models/buffalo_l/2d106det.onnx")
    assert "weights: MIT" in licence_of("liveportrait/base_models/warping_module.pth")
    assert "personal/research/non-commercial" in licence_of("wav2lip/checkpoints/wav2lip_gan.pth")
    assert "weights: none stated" in licence_of("wav2lip/face_detection/detection/sfd/s3fd.pth")
    gfpgan = licence_of("gfpgan/GFPGANv1.3.pth")
    assert "Apache-2.0 except" in gfpgan and "Nvidia Source Code License-NC" in gfpgan
    assert "CC BY-NC-SA 4.0" in licence_of("gfpgan/weights/parsing_parsenet.pth")
    assert "Pytorch_Retinaface: MIT" in licence_of("gfpgan/weights/detection_Resnet50_Final.pth")
    musetalk = licence_of("musetalk/musetalkV15/unet.pth")
    assert "any purpose, even commercially" in musetalk and "creativeml-openrail-m" in musetalk
    assert "weights: MIT" in licence_of("musetalk/sd-vae/diffusion_pytorch_model.bin")
    assert "Apache-2.0" in licence_of("musetalk/whisper/pytorch_model.bin")
    assert "weights: none stated" in licence_of("musetalk/face-parse-bisent/79999_iter.pth")
