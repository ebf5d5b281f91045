"""GFPGAN's checkpoint files: where they live, and loading them into our networks.

Under ``gfpgan/`` in the weights directory, as the official release and facexlib name them:

    gfpgan/GFPGANv1.4.pth                          restorer (v1.3 also accepted)
    gfpgan/weights/detection_Resnet50_Final.pth    RetinaFace, for frames without geometry
    gfpgan/weights/parsing_parsenet.pth            face parser, for the official paste mask
"""

from __future__ import annotations

from pathlib import Path

import torch

from talkinghead.services.common.checkpoints import load_strict, read_checkpoint
from talkinghead.services.common.deterministic_weights import deterministic_module_state
from talkinghead.services.common.errors import WeightsError

FILES = {
    "gfpgan_v1.4": "gfpgan/GFPGANv1.4.pth",
    "gfpgan_v1.3": "gfpgan/GFPGANv1.3.pth",
    "retinaface": "gfpgan/weights/detection_Resnet50_Final.pth",
    "parsenet": "gfpgan/weights/parsing_parsenet.pth",
}
DESCRIPTIONS = {
    "gfpgan_v1.4": "GFPGANv1Clean restorer (v1.4, used when present)",
    "gfpgan_v1.3": "GFPGANv1Clean restorer (v1.3; either version is enough)",
    "retinaface": "RetinaFace ResNet-50, for frames without face geometry (optional)",
    "parsenet": "ParseNet face parser, for the official soft paste mask (optional)",
}


def restorer_path(weights_dir: Path) -> Path:
    for key in ("gfpgan_v1.4", "gfpgan_v1.3"):
        path = Path(weights_dir) / FILES[key]
        if path.is_file():
            return path
    raise WeightsError(f"missing weights file: {Path(weights_dir) / FILES['gfpgan_v1.4']} "
                       f"(or {FILES['gfpgan_v1.3']})")


def load_restorer(weights_dir: Path) -> tuple[torch.nn.Module, Path]:
    from talkinghead.services.restore.networks.gfpgan import (
        GFPGANv1Clean,
        gfpgan_keys_from_official,
    )

    path = restorer_path(weights_dir)
    net = load_strict(GFPGANv1Clean(), gfpgan_keys_from_official(read_checkpoint(path)), str(path))
    return net.eval(), path


def load_detector(weights_dir: Path):
    from talkinghead.services.restore.networks.retinaface import load_retinaface

    path = Path(weights_dir) / FILES["retinaface"]
    return load_retinaface(path) if path.is_file() else None


def load_parser(weights_dir: Path):
    from talkinghead.services.restore.networks.parsenet import load_parsenet

    path = Path(weights_dir) / FILES["parsenet"]
    return load_parsenet(path) if path.is_file() else None


def write_deterministic_checkpoints(weights_dir: Path, salt: str) -> list[Path]:
    """Official-layout files with the reference pack's deterministic weights."""
    from talkinghead.services.restore.networks.gfpgan import GFPGANv1Clean, gfpgan_official_file
    from talkinghead.services.restore.networks.parsenet import ParseNet
    from talkinghead.services.restore.networks.retinaface import RetinaFace

    detector = deterministic_module_state(RetinaFace(), salt)
    # The pack's one deviation: the first BatchNorm absorbs the raw pixel scale (x 64^2),
    # otherwise the box decoding overflows (reference/gfpgan/README.md, "Deviations").
    detector["body.bn1.running_var"] = detector["body.bn1.running_var"] * 4096
    restorer = gfpgan_official_file(deterministic_module_state(GFPGANv1Clean(), salt))
    written = []
    for key, content in (("gfpgan_v1.4", restorer),
                         ("retinaface", detector),
                         ("parsenet", deterministic_module_state(ParseNet(), salt))):
        path = Path(weights_dir) / FILES[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(content, path)
        written.append(path)
    return written
