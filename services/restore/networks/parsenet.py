"""ParseNet face parser (from PSFR-GAN, Chen et al., CVPR 2021, "Progressive Semantic-Aware
Style Transformation for Blind Face Restoration"), as facexlib ships it in
``parsing_parsenet.pth`` and GFPGAN runs it to build the paste-back mask.

GFPGAN's default paste-back keeps the restored face only where the parser's argmax says
"face" (classes 1–13, 15), so the mask edge depends on reproducing these logits. The network
is a residual encoder–body–decoder at 19-class / RGB output:

* every conv is preceded by reflection padding of 1 (3x3 kernels); convs followed by
  BatchNorm have no bias, the others (stem, shortcuts, heads) have one;
* encoder: a plain 3x3 stem 3→64, then four down blocks (64→128→256→256→256); a down block
  is conv+BN+leaky(0.2), conv(stride 2)+BN, plus a biased stride-2 conv shortcut;
* body: ten identity residual blocks (conv+BN+leaky, conv+BN) at 1/16 size, whose output is
  added once more to the body's input;
* decoder: four up blocks (256→256→256→128→64), nearest ×2 before the first conv and before
  the shortcut conv;
* heads: 3x3 convs to the 19 parsing logits and to a 3-channel image; forward returns
  both as a :class:`ParseNetOutput` (upstream's tuple, named).

The input and the per-pixel classes GFPGAN's mask is built from live in
``services/restore/face_parsing.py``; the mask itself in ``face_align.py``.

Fully convolutional: trained for 512², it runs at any size divisible by 16.

Our own module; its state_dict names equal ``parsing_parsenet.pth``'s (plain, no prefix).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.services.common.checkpoints import (
    fill_batchnorm_counters,
    load_strict,
    read_checkpoint,
    strip_prefix,
)


@dataclass
class ParseNetConfig:
    """Widths of the released parser (facexlib's ParseNet(in_size=512, out_size=512))."""

    base_width: int = 64
    encoder_widths: tuple[int, ...] = (128, 256, 256, 256)  # outputs of the 4 down blocks
    body_depth: int = 10
    decoder_widths: tuple[int, ...] = (256, 256, 128, 64)  # outputs of the 4 up blocks
    parsing_classes: int = 19
    image_channels: int = 3
    leaky_slope: float = 0.2
    bn_eps: float = 1e-5


@dataclass(frozen=True)
class ParseNetOutput:
    """Upstream's (out_mask, out_img), named."""

    mask: torch.Tensor   # [B, 19, H, W] parsing logits
    image: torch.Tensor  # [B, 3, H, W]


class PadConv(nn.Module):
    """[nearest ×2] → reflection pad 1 → 3x3 conv → [BN] → [leaky ReLU].

    Submodule names follow the checkpoint: ``conv2d`` and ``norm.norm`` (a BatchNorm wrapped
    once more upstream); the BN-less convs carry a bias.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int = 1,
        upsample: bool = False,
        norm: bool = False,
        slope: float | None = None,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.slope = slope
        self.conv2d = nn.Conv2d(cin, cout, 3, stride=stride, bias=not norm)
        self.norm = nn.Module() if norm else None
        if self.norm is not None:
            self.norm.norm = nn.BatchNorm2d(cout, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"))
        if self.norm is not None:
            x = self.norm.norm(x)
        if self.slope is not None:
            x = F.leaky_relu(x, self.slope)
        return x


class ResidualBlock(nn.Module):
    """conv+BN+leaky → conv+BN, plus a shortcut: identity, or a biased conv that resamples
    like the main path (stride 2 down; nearest ×2 up)."""

    def __init__(self, cin: int, cout: int, scale: Literal["down", "up", "none"],
                 slope: float, eps: float) -> None:
        super().__init__()
        down, up = scale == "down", scale == "up"
        self.shortcut_func: PadConv | None = None
        if scale != "none" or cin != cout:
            self.shortcut_func = PadConv(cin, cout, stride=2 if down else 1, upsample=up)
        self.conv1 = PadConv(cin, cout, upsample=up, norm=True, slope=slope, eps=eps)
        self.conv2 = PadConv(cout, cout, stride=2 if down else 1, norm=True, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut_func is None else self.shortcut_func(x)
        return skip + self.conv2(self.conv1(x))


class ParseNet(nn.Module):
    """[B, 3, H, W] RGB in [−1, 1] → mask logits [B, 19, H, W] and image [B, 3, H, W]."""

    def __init__(self, config: ParseNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ParseNetConfig()
        slope, eps = cfg.leaky_slope, cfg.bn_eps
        encoder: list[nn.Module] = [PadConv(cfg.image_channels, cfg.base_width)]
        cin = cfg.base_width
        for cout in cfg.encoder_widths:
            encoder.append(ResidualBlock(cin, cout, "down", slope, eps))
            cin = cout
        self.encoder = nn.Sequential(*encoder)
        self.body = nn.Sequential(
            *(ResidualBlock(cin, cin, "none", slope, eps) for _ in range(cfg.body_depth))
        )
        decoder = []
        for cout in cfg.decoder_widths:
            decoder.append(ResidualBlock(cin, cout, "up", slope, eps))
            cin = cout
        self.decoder = nn.Sequential(*decoder)
        self.out_img_conv = PadConv(cin, cfg.image_channels)
        self.out_mask_conv = PadConv(cin, cfg.parsing_classes)

    def forward(self, x: torch.Tensor) -> ParseNetOutput:
        feat = self.encoder(x)
        x = self.decoder(feat + self.body(feat))
        return ParseNetOutput(mask=self.out_mask_conv(x), image=self.out_img_conv(x))


# ---- checkpoint ----------------------------------------------------------------------------

def parsenet_keys_from_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map ``parsing_parsenet.pth`` keys to ours: the identity (our names reproduce the
    official ones). A ``module.`` prefix, should a re-saved copy carry one, is stripped; a
    missing BatchNorm ``num_batches_tracked`` (unused in eval) is filled with 0, as PyTorch's
    BatchNorm loader does, so loading stays strict."""
    return fill_batchnorm_counters(strip_prefix(state_dict, "module."))


def load_parsenet(path: Path) -> ParseNet:
    """ParseNet with the weights of an official ``parsing_parsenet.pth`` (CPU, strict)."""
    state = read_checkpoint(path)
    net = load_strict(ParseNet(), parsenet_keys_from_official(state), str(path))
    return net.eval()
