"""LivePortrait's warping module W: moves the source feature volume to the driving pose.

W of LivePortrait (Guo et al., 2024, arXiv:2407.03168). Given the appearance feature volume
f_s [B, 32, 16, H, W] and the implicit keypoints of source and driving, the dense motion
network (FOMM's design, Siarohin et al. 2019, in 3-D; see dense_motion.py) predicts a flow;
f_s is resampled along it (trilinear ``grid_sample``, ``align_corners=False``), flattened
over depth to 512 channels, projected to the generator's 256, and multiplied by the
occlusion map so that regions the source cannot explain are left to the generator.

Checkpoint: ``warping_module.pth`` is a plain state_dict whose names already match this
module, so ``warping_keys_from_official`` is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from talkinghead.services.common.grid_sampling import sample
from talkinghead.services.motion.networks.blocks import SameBlock2d
from talkinghead.services.motion.networks.dense_motion import DenseMotionConfig, DenseMotionNetwork


@dataclass
class WarpingConfig:
    """models.yaml ``warping_module_params``."""

    num_kp: int = 21
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    reshape_channel: int = 32
    # models.yaml turns it on (upstream's constructor default is off): it adds the
    # ``occlusion`` conv, which the official checkpoint has
    estimate_occlusion_map: bool = True
    # upstream's flag_use_occlusion_map: multiply the output by the occlusion map
    use_occlusion_map: bool = True
    # num_kp, feature_channel and estimate_occlusion_map of this are taken from W's fields
    dense_motion: DenseMotionConfig = field(default_factory=DenseMotionConfig)


@dataclass(frozen=True)
class WarpOutput:
    """What W returns (upstream's dict keys as fields); ``occlusion_map`` is None when the
    config does not estimate it."""

    occlusion_map: torch.Tensor | None   # [B, 1, H, W] in (0, 1)
    deformation: torch.Tensor            # [B, D, H, W, 3], (x, y, z) in grid_sample units
    out: torch.Tensor                    # [B, 256, H, W], the generator's input


class WarpingNetwork(nn.Module):
    """f_s, x_s, x_d → warped feature for the SPADE generator (plus flow and occlusion)."""

    def __init__(self, config: WarpingConfig | None = None) -> None:
        super().__init__()
        config = config or WarpingConfig()
        self.config = config
        self.dense_motion_network = DenseMotionNetwork(replace(
            config.dense_motion,
            num_kp=config.num_kp,
            feature_channel=config.reshape_channel,
            estimate_occlusion_map=config.estimate_occlusion_map,
        ))
        width = config.block_expansion * 2**config.num_down_blocks
        # max_features (512) is also reshape_channel × reshape_depth, the flattened volume
        self.third = SameBlock2d(config.max_features, width, kernel_size=3, padding=1, lrelu=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1)

    def forward(self, feature_3d: torch.Tensor, kp_source: torch.Tensor,
                kp_driving: torch.Tensor) -> WarpOutput:
        """feature_3d [B, C, D, H, W]; kp_source, kp_driving [B, K, 3] (x, y, z in [-1, 1])."""
        motion = self.dense_motion_network(feature_3d, kp_source, kp_driving)
        deformation = motion.deformation
        occlusion_map = motion.occlusion_map

        warped = sample(feature_3d, deformation)   # [B, C, D, H, W]; grid made contiguous
        b, c, d, h, w = warped.shape
        out = self.fourth(self.third(warped.reshape(b, c * d, h, w)))
        if self.config.use_occlusion_map and occlusion_map is not None:
            out = out * occlusion_map
        return WarpOutput(occlusion_map=occlusion_map, deformation=deformation, out=out)


def warping_keys_from_official(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ``warping_module.pth`` keys → ours: the identity (our names are the official
    ones, in the same order); returns a new dict."""
    return dict(state_dict)
