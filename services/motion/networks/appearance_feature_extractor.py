"""Appearance feature extractor F of LivePortrait (Guo et al., 2024, arXiv:2407.03168).

F lifts the source photo into a 3-D appearance feature volume once per source; the warping
module then deforms that volume for every driving frame. Shape flow at the official 256×256
crop: [B,3,256,256] → SameBlock2d 64ch → two DownBlock2d (128, 256 ch, /4 spatially) →
1×1 conv to 512 ch → reshape to [B,32,16,64,64] → six 3-D residual blocks.

Our own module; its state_dict names equal ``appearance_feature_extractor.pth``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from talkinghead.services.motion.networks.blocks import DownBlock2d, ResBlock3d, SameBlock2d


@dataclass
class AppearanceConfig:
    """Hyper-parameters of F; defaults are ``appearance_feature_extractor_params`` of the
    official models.yaml."""

    image_channel: int = 3
    block_expansion: int = 64
    num_down_blocks: int = 2
    max_features: int = 512
    reshape_channel: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6


class AppearanceFeatureExtractor(nn.Module):
    """Image [B,3,H,W] in 0..1 → feature volume [B, reshape_channel, reshape_depth, H/4, W/4]."""

    def __init__(self, config: AppearanceConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or AppearanceConfig()
        if cfg.reshape_channel * cfg.reshape_depth != cfg.max_features:
            raise ValueError("reshape_channel * reshape_depth must equal max_features")

        self.first = SameBlock2d(cfg.image_channel, cfg.block_expansion, kernel_size=3, padding=1)
        widths = [min(cfg.max_features, cfg.block_expansion * 2**i) for i in range(cfg.num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(
            DownBlock2d(widths[i], widths[i + 1], kernel_size=3, padding=1)
            for i in range(cfg.num_down_blocks)
        )
        # A 1×1 conv widens to max_features so the channels can be folded into (C, D).
        self.second = nn.Conv2d(widths[-1], cfg.max_features, kernel_size=1)
        # Official child names are "3dr0", "3dr1", ... inside a Sequential.
        self.resblocks_3d = nn.Sequential()
        for i in range(cfg.num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(cfg.reshape_channel, kernel_size=3, padding=1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.first(image)
        for block in self.down_blocks:
            x = block(x)
        x = self.second(x)
        b, _, h, w = x.shape
        volume = x.view(b, self.config.reshape_channel, self.config.reshape_depth, h, w)
        return self.resblocks_3d(volume)


def appearance_keys_from_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map ``appearance_feature_extractor.pth`` keys to ours: the identity, because our
    attribute names already reproduce the official ones (a ``module.`` prefix left by
    DataParallel training, if any, is stripped)."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}
