"""Wav2Lip's checkpoint files: where they live, and loading them into our networks.

Laid out like the official repository, under ``wav2lip/`` in the weights directory:

    wav2lip/checkpoints/wav2lip_gan.pth                   generator, GAN-trained (preferred)
    wav2lip/checkpoints/wav2lip.pth                       generator, base (sharper sync)
    wav2lip/face_detection/detection/sfd/s3fd.pth         S3FD, for frames without geometry

Either generator file will do; with both present the GAN one is used (better visual
quality; the upstream README's advice) unless the server is told otherwise.
"""

from __future__ import annotations

from pathlib import Path

import torch

from talkinghead.services.common.checkpoints import load_strict, read_checkpoint
from talkinghead.services.common.deterministic_weights import deterministic_module_state
from talkinghead.services.common.errors import WeightsError

FILES = {
    "wav2lip_gan": "wav2lip/checkpoints/wav2lip_gan.pth",
    "wav2lip": "wav2lip/checkpoints/wav2lip.pth",
    "s3fd": "wav2lip/face_detection/detection/sfd/s3fd.pth",
}
DESCRIPTIONS = {
    "wav2lip_gan": "generator, GAN variant (used when present)",
    "wav2lip": "generator, base variant (either generator is enough)",
    "s3fd": "S3FD face detector, for frames that come without face geometry (optional)",
}


def generator_path(weights_dir: Path, variant: str = "auto") -> Path:
    """The generator file to use: 'gan', 'base', or 'auto' (GAN if present, else base)."""
    weights_dir = Path(weights_dir)
    gan, base = weights_dir / FILES["wav2lip_gan"], weights_dir / FILES["wav2lip"]
    if variant == "gan" or (variant == "auto" and gan.is_file()):
        return gan
    if variant in ("base", "auto"):
        if variant == "auto" and not base.is_file():
            raise WeightsError(f"missing weights file: {gan} (or {base})")
        return base
    raise ValueError(f"unknown Wav2Lip variant {variant!r} (auto, gan, base)")


def load_generator(weights_dir: Path, variant: str = "auto") -> tuple[torch.nn.Module, Path]:
    from talkinghead.services.lipsync.networks.wav2lip import Wav2Lip, wav2lip_keys_from_official

    path = generator_path(weights_dir, variant)
    net = load_strict(Wav2Lip(), wav2lip_keys_from_official(read_checkpoint(path)), str(path))
    return net.eval(), path


def load_detector(weights_dir: Path) -> torch.nn.Module | None:
    """S3FD if its file is there (it is optional), else None."""
    from talkinghead.services.lipsync.networks.s3fd import load_s3fd

    path = Path(weights_dir) / FILES["s3fd"]
    return load_s3fd(path) if path.is_file() else None


def write_deterministic_checkpoints(weights_dir: Path, salt: str) -> list[Path]:
    """Official-layout files with the reference pack's deterministic weights."""
    from talkinghead.services.lipsync.networks.s3fd import S3FD
    from talkinghead.services.lipsync.networks.wav2lip import Wav2Lip, wav2lip_official_file

    weights_dir = Path(weights_dir)
    written = []
    for key, content in (
        ("wav2lip_gan", wav2lip_official_file(deterministic_module_state(Wav2Lip(), salt))),
        ("s3fd", deterministic_module_state(S3FD(), salt)),
    ):
        path = weights_dir / FILES[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(content, path)
        written.append(path)
    return written
