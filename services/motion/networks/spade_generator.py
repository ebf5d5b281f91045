"""SPADE generator G of LivePortrait (Guo et al., 2024, arXiv:2407.03168).

G decodes the warped 2-D feature map from the warping module into the animated RGB frame.
It follows SPADE (Park et al., 2019, arXiv:1903.07291): every residual block is modulated
by the warped feature itself, so appearance detail re-enters at each scale. Shape flow at
full size: [B,256,64,64] → 3×3 conv 512 ch → six SPADE res-blocks → ×2 nearest upsample →
res-block to 256 ch → ×2 → res-block to 64 ch → LeakyReLU(0.2) → 3×3 conv to 3·upscale²
channels → pixel shuffle → sigmoid: [B,3,512,512] (eight times the input size for upscale 2).

Our own module; its state_dict names equal ``spade_generator.pth``'s, including the
spectral-norm tensors ``weight_orig``/``weight_u``/``weight_v`` (see blocks.SpectralNormConv2d).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.services.motion.networks.blocks import SPADEResnetBlock


@dataclass
class SPADEGeneratorConfig:
    """Hyper-parameters of G; defaults are ``spade_generator_params`` of the official
    models.yaml (out_channels 64 is the official constructor default, not in the yaml)."""

    upscale: int = 2
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    out_channels: int = 64
    num_middle_blocks: int = 6

    @property
    def input_channels(self) -> int:
        """Channels of the warped feature G consumes (256 with the defaults)."""
        return min(self.max_features, self.block_expansion * 2**self.num_down_blocks)


class SPADEGenerator(nn.Module):
    """Warped feature [B,C,h,w] → RGB [B,3,4·u·h,4·u·w] in 0..1, u = ``upscale``: two ×2
    nearest upsamples, then a pixel shuffle by u (u ≤ 1: a plain 3-channel output conv).
    The official code always shuffles by 2 when upscale > 1; the same for its upscale 2."""

    def __init__(self, config: SPADEGeneratorConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or SPADEGeneratorConfig()
        c = cfg.input_channels
        self.fc = nn.Conv2d(c, 2 * c, kernel_size=3, padding=1)
        # Official names are G_middle_0 … G_middle_5 directly on the module, not a list.
        for i in range(cfg.num_middle_blocks):
            setattr(self, f"G_middle_{i}", SPADEResnetBlock(2 * c, 2 * c, label_nc=c))
        self.up_0 = SPADEResnetBlock(2 * c, c, label_nc=c)
        self.up_1 = SPADEResnetBlock(c, cfg.out_channels, label_nc=c)
        if cfg.upscale is None or cfg.upscale <= 1:
            self.conv_img = nn.Conv2d(cfg.out_channels, 3, kernel_size=3, padding=1)
        else:
            # Sub-pixel output: predict upscale² RGB planes and interleave them.
            self.conv_img = nn.Sequential(
                nn.Conv2d(cfg.out_channels, 3 * cfg.upscale**2, kernel_size=3, padding=1),
                nn.PixelShuffle(cfg.upscale),
            )

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        seg = feature  # every SPADE block is conditioned on the input feature itself
        x = self.fc(feature)
        for i in range(self.config.num_middle_blocks):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(F.interpolate(x, scale_factor=2, mode="nearest"), seg)
        x = self.up_1(F.interpolate(x, scale_factor=2, mode="nearest"), seg)
        x = self.conv_img(F.leaky_relu(x, 0.2))
        return torch.sigmoid(x)


def spade_keys_from_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map ``spade_generator.pth`` keys to ours: the identity, because our attribute names
    (including the spectral-norm ``weight_orig``/``weight_u``/``weight_v``) already reproduce
    the official ones (a ``module.`` prefix left by DataParallel training, if any, is
    stripped). The spectral-norm tensors load unchanged; no weight is pre-normalised."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}
