"""LivePortrait's checkpoint files: where they live, and loading them into our networks.

The weights directory is laid out like the official release's ``pretrained_weights``
folder, so users can point ``--weights`` at what they downloaded:

    liveportrait/base_models/appearance_feature_extractor.pth   F
    liveportrait/base_models/motion_extractor.pth               M
    liveportrait/base_models/warping_module.pth                 W
    liveportrait/base_models/spade_generator.pth                G
    liveportrait/retargeting_models/stitching_retargeting_module.pth   S, lip, eye
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from talkinghead.services.common.checkpoints import file_fingerprint, load_strict, read_checkpoint
from talkinghead.services.common.deterministic_weights import deterministic_module_state

BASE = "liveportrait/base_models"
FILES = {
    "appearance_feature_extractor": f"{BASE}/appearance_feature_extractor.pth",
    "motion_extractor": f"{BASE}/motion_extractor.pth",
    "warping_module": f"{BASE}/warping_module.pth",
    "spade_generator": f"{BASE}/spade_generator.pth",
    "stitching_retargeting_module": "liveportrait/retargeting_models/stitching_retargeting_module.pth",
}
DESCRIPTIONS = {
    "appearance_feature_extractor": "F: appearance feature volume of the source",
    "motion_extractor": "M: keypoints, head pose, expression (ConvNeXt-V2)",
    "warping_module": "W: dense motion + occlusion, warps the feature volume",
    "spade_generator": "G: SPADE decoder to the 512 px image",
    "stitching_retargeting_module": "stitching, eye and lip retargeting MLPs",
}



def _single_file_networks() -> dict:
    """File key → (network class, official-key mapping), for the one-network files."""
    from talkinghead.services.motion.networks import (
        appearance_feature_extractor as f,
    )
    from talkinghead.services.motion.networks import motion_extractor as m
    from talkinghead.services.motion.networks import spade_generator as g
    from talkinghead.services.motion.networks import warping_network as w

    return {
        "appearance_feature_extractor": (f.AppearanceFeatureExtractor,
                                         f.appearance_keys_from_official),
        "motion_extractor": (m.MotionExtractor, m.motion_keys_from_official),
        "warping_module": (w.WarpingNetwork, w.warping_keys_from_official),
        "spade_generator": (g.SPADEGenerator, g.spade_keys_from_official),
    }


@dataclass
class LivePortraitNetworks:
    appearance: nn.Module
    motion: nn.Module
    warping: nn.Module
    generator: nn.Module
    stitching: nn.Module
    lip: nn.Module
    eye: nn.Module
    fingerprint: str

    def to(self, device: str, dtype: torch.dtype = torch.float32) -> LivePortraitNetworks:
        for net in (self.appearance, self.motion, self.warping, self.generator,
                    self.stitching, self.lip, self.eye):
            net.to(device=device, dtype=dtype).eval()
        return self


def load_network(weights_dir: Path, key: str) -> nn.Module:
    """One single-file network (a key of FILES but the stitching file), strict, on CPU."""
    cls, mapping = _single_file_networks()[key]
    path = Path(weights_dir) / FILES[key]
    return load_strict(cls(), mapping(read_checkpoint(path)), str(path))


def load_networks(weights_dir: Path) -> LivePortraitNetworks:
    """Every LivePortrait network from the official files; WeightsError names any problem."""
    from talkinghead.services.motion.networks.stitching_retargeting import (
        load_stitching_retargeting,
    )

    weights_dir = Path(weights_dir)
    nets = {}
    for key in _single_file_networks():
        nets[key] = load_network(weights_dir, key)
    path = weights_dir / FILES["stitching_retargeting_module"]
    stitching, lip, eye = load_stitching_retargeting(read_checkpoint(path), source=str(path))
    return LivePortraitNetworks(
        appearance=nets["appearance_feature_extractor"],
        motion=nets["motion_extractor"],
        warping=nets["warping_module"],
        generator=nets["spade_generator"],
        stitching=stitching,
        lip=lip,
        eye=eye,
        fingerprint=file_fingerprint([weights_dir / p for p in FILES.values()]),
    )


def write_deterministic_checkpoints(weights_dir: Path, salt: str) -> list[Path]:
    """Official-layout files holding the reference packs' deterministic weights.

    Our modules' parameter names are the official ones (proved by the equivalence tests),
    so the files are what the official loaders would accept; for benchmarks and runs
    without the real weights.
    """
    from talkinghead.services.motion.networks.stitching_retargeting import (
        build_mlps,
        official_layout_from_prefixed,
    )

    weights_dir = Path(weights_dir)
    written = []
    for key, (cls, _mapping) in _single_file_networks().items():
        path = weights_dir / FILES[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(deterministic_module_state(cls(), salt), path)
        written.append(path)
    prefixed = {}
    for prefix, mlp in zip(("stitching.", "lip.", "eye."), build_mlps(), strict=True):
        prefixed.update({prefix + k: v for k, v in deterministic_module_state(mlp, salt, prefix).items()})
    path = weights_dir / FILES["stitching_retargeting_module"]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(official_layout_from_prefixed(prefixed), path)
    written.append(path)
    return written
