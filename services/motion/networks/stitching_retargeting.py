"""Stitching and retargeting MLPs of LivePortrait (Guo et al., 2024, arXiv:2407.03168).

Three small MLPs work on keypoints only, so they cost next to nothing per frame:

- stitching (S): [x_s, x_d] flattened (126) → 63 keypoint offsets + (tx, ty) (65). It
  nudges the driving keypoints so the animated crop lines up with the original photo around
  the crop's border (shoulders), which is what lets the crop be pasted back seamlessly.
- lip retargeting: [x_s, lip-open ratio] (65) → 63 offsets that open or close the mouth.
- eye retargeting: [x_s, eye-open ratios] (66) → 63 offsets that open or close the eyes,
  for example when a small-eyed driver animates a large-eyed source.

The official file ``stitching_retargeting_module.pth`` holds three state_dicts, under
``retarget_shoulder``, ``retarget_mouth`` and ``retarget_eye``; their keys may carry a
DataParallel ``module.`` prefix, which the official loader strips and so do we.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from talkinghead.services.common.checkpoints import load_strict, strip_prefix
from talkinghead.services.common.errors import WeightsError

# Our role name → the key under which the official checkpoint stores that MLP.
OFFICIAL_KEYS = {"stitching": "retarget_shoulder", "lip": "retarget_mouth", "eye": "retarget_eye"}


@dataclass
class MLPConfig:
    """Sizes of one MLP: ``input_size`` → hidden layers (ReLU after each) → ``output_size``."""

    input_size: int
    hidden_sizes: tuple[int, ...]
    output_size: int


@dataclass
class StitchingRetargetingConfig:
    """``stitching_retargeting_module_params`` of the official models.yaml (21 keypoints)."""

    stitching: MLPConfig = field(default_factory=lambda: MLPConfig(126, (128, 128, 64), 65))
    lip: MLPConfig = field(default_factory=lambda: MLPConfig(65, (128, 128, 64), 63))
    eye: MLPConfig = field(default_factory=lambda: MLPConfig(66, (256, 256, 128, 128, 64), 63))


class StitchingRetargetingMLP(nn.Module):
    """Linear/ReLU stack held in ``mlp`` (official name): linears sit at even indices."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.input_size, *config.hidden_sizes]
        layers: list[nn.Module] = []
        for width_in, width_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], config.output_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def build_mlps(
    config: StitchingRetargetingConfig | None = None,
) -> tuple[StitchingRetargetingMLP, StitchingRetargetingMLP, StitchingRetargetingMLP]:
    """(stitching, lip, eye), freshly initialised."""
    cfg = config or StitchingRetargetingConfig()
    return (StitchingRetargetingMLP(cfg.stitching), StitchingRetargetingMLP(cfg.lip),
            StitchingRetargetingMLP(cfg.eye))


def load_stitching_retargeting(
    checkpoint: Mapping[str, Mapping[str, torch.Tensor]],
    source: str = "stitching_retargeting_module.pth",
    config: StitchingRetargetingConfig | None = None,
) -> tuple[StitchingRetargetingMLP, StitchingRetargetingMLP, StitchingRetargetingMLP]:
    """(stitching, lip, eye) loaded strict from the dict the official file holds, in eval mode.

    Each state_dict's keys equal ours once a leading ``module.`` is stripped. A missing
    entry or a mismatching tensor raises WeightsError naming ``source`` and the culprit.
    """
    mlps = build_mlps(config)
    for role, mlp in zip(OFFICIAL_KEYS, mlps, strict=True):
        key = OFFICIAL_KEYS[role]
        if key not in checkpoint:
            raise WeightsError(f"{source}: no {key!r} entry ({role} MLP); found {sorted(checkpoint)}")
        load_strict(mlp, strip_prefix(checkpoint[key], "module."), f"{source} [{key}]")
        mlp.eval()
    return mlps


def official_layout_from_prefixed(
    state: Mapping[str, torch.Tensor],
) -> dict[str, dict[str, torch.Tensor]]:
    """``{'stitching.mlp.0.weight': ..., 'lip.…', 'eye.…'}`` (the manifest's and the
    deterministic weights' names) → ``{'retarget_shoulder': {'mlp.0.weight': ...}, ...}``,
    the layout of the official file, so it can be saved with torch.save or loaded above."""
    out: dict[str, dict[str, torch.Tensor]] = {key: {} for key in OFFICIAL_KEYS.values()}
    for name, tensor in state.items():
        role, _, rest = name.partition(".")
        if role not in OFFICIAL_KEYS or not rest:
            raise ValueError(f"{name!r} does not start with one of {sorted(OFFICIAL_KEYS)} + '.'")
        out[OFFICIAL_KEYS[role]][rest] = tensor
    return out
