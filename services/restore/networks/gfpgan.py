"""GFPGAN v1.3/v1.4, the "clean" architecture GFPGANv1Clean (Wang et al., "Towards Real-World
Blind Face Restoration with Generative Facial Prior", CVPR 2021, arXiv:2101.04061).

A degraded, aligned 512² face is encoded by a U-Net; its bottleneck becomes one StyleGAN2
latent per decoder layer, and its decoder levels become spatial (scale, shift) maps that
steer a pretrained StyleGAN2 generator (``stylegan2.py``) towards the input:

    image [B,3,512,512] RGB −1..1 → 1×1 conv → 7 down blocks → 4² → 3×3 conv [B,256,4,4]
      → flatten (NCHW) → Linear 4096→8192 → 16 latents of 512 ─────────────┐
      → 7 up blocks (+ encoder skip) → per level: scale, shift (SFT) ──────┤
                                                   StyleGAN2 decoder ← ────┘ → [B,3,512,512]

Our own module: attribute names and registration order reproduce the official
``GFPGANv1.3.pth`` / ``GFPGANv1.4.pth`` tensors (under ``params_ema``), so both load with
``load_state_dict(strict=True)``. The U-Net runs at half the StyleGAN widths.

Noise: the official network draws fresh Gaussian noise for each of the 15 style convs on
every call (``randomize_noise=True``, what ``GFPGANer`` uses), so its output is not
repeatable. Ours defaults to the checkpoint's stored noise buffers (the official
``randomize_noise=False``), so a face restores the same way every time; random noise is
available with an explicit generator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.services.common.errors import WeightsError
from talkinghead.services.restore.networks.stylegan2 import (
    LEAKY_SLOPE,
    StyleGAN2DecoderSFT,
    stylegan_channels,
)

FACE_SIZE = 512
OFFICIAL_KEYS = ("params_ema", "params")  # GFPGANer's order of preference


@dataclass
class GFPGANConfig:
    """The constructor arguments of the released v1.3/v1.4 networks (the manifest's).

    ``decoder_load_path`` and ``fix_decoder`` only matter for training (loading a StyleGAN2
    prior, freezing it); they are kept so the config mirrors the official one.
    """

    out_size: int = 512
    num_style_feat: int = 512
    channel_multiplier: int = 2
    decoder_load_path: str | None = None
    fix_decoder: bool = False
    num_mlp: int = 8
    input_is_latent: bool = True  # the encoder emits W latents: the mapping MLP is skipped
    different_w: bool = True  # one latent per decoder layer, not one shared
    narrow: float = 1
    sft_half: bool = True  # SFT bends half of the channels, the other half keeps the prior


class ResBlock(nn.Module):
    """Residual block with a bilinear resize (×0.5 down, ×2 up) inside both paths.

    Main: 3×3 conv, leaky, resize, 3×3 conv, leaky. Skip: resize, bias-free 1×1 conv. Sum,
    with no activation or gain after it.
    """

    def __init__(self, in_channels: int, out_channels: int, scale_factor: float) -> None:
        super().__init__()
        self.scale_factor = scale_factor
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), LEAKY_SLOPE)
        out = F.leaky_relu(self.conv2(self._resize(out)), LEAKY_SLOPE)
        return out + self.skip(self._resize(x))


def _condition(channels: int, out_channels: int) -> nn.Sequential:
    """conv3×3 → leaky → conv3×3: one SFT map (scale or shift) from a U-Net level."""
    return nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(LEAKY_SLOPE),
                         nn.Conv2d(channels, out_channels, 3, 1, 1))


@dataclass(frozen=True)
class GFPGANOutput:
    """``image`` (the official forward's first output); ``rgbs`` are the U-Net's RGB heads at
    8²…512² (only with ``return_rgb``, else empty), ``style_code`` the encoder's [B,16,512]
    latents."""

    image: torch.Tensor
    rgbs: list[torch.Tensor]
    style_code: torch.Tensor


class GFPGANv1Clean(nn.Module):
    """[B,3,512,512] RGB face in −1..1 → restored face, same layout, *not* clamped."""

    def __init__(self, config: GFPGANConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or GFPGANConfig()
        if cfg.decoder_load_path:
            raise ValueError("decoder_load_path is for training; load a full GFPGAN checkpoint instead")
        self.log_size = int(math.log2(cfg.out_size))
        unet = stylegan_channels(cfg.channel_multiplier, cfg.narrow * 0.5)
        levels = [2**i for i in range(3, self.log_size + 1)]  # 8 … out_size

        self.conv_body_first = nn.Conv2d(3, unet[cfg.out_size], 1)
        self.conv_body_down = nn.ModuleList(
            ResBlock(unet[2 * size], unet[size], 0.5) for size in reversed([4, *levels[:-1]]))
        self.final_conv = nn.Conv2d(unet[4], unet[4], 3, 1, 1)
        self.conv_body_up = nn.ModuleList(
            ResBlock(unet[size // 2], unet[size], 2) for size in levels)
        self.toRGB = nn.ModuleList(nn.Conv2d(unet[size], 3, 1) for size in levels)
        num_latent = 2 * self.log_size - 2 if cfg.different_w else 1
        self.final_linear = nn.Linear(unet[4] * 4 * 4, num_latent * cfg.num_style_feat)
        self.stylegan_decoder = StyleGAN2DecoderSFT(cfg.out_size, cfg.num_style_feat, cfg.num_mlp,
                                                    cfg.channel_multiplier, cfg.narrow, cfg.sft_half)
        sft_channels = [unet[size] if cfg.sft_half else 2 * unet[size] for size in levels]
        self.condition_scale = nn.ModuleList(
            _condition(unet[s], c) for s, c in zip(levels, sft_channels, strict=True))
        self.condition_shift = nn.ModuleList(
            _condition(unet[s], c) for s, c in zip(levels, sft_channels, strict=True))

    def forward(self, x: torch.Tensor, *, return_rgb: bool = False, randomize_noise: bool = False,
                generator: torch.Generator | None = None) -> GFPGANOutput:
        """Restore ``x``. Deterministic unless ``randomize_noise`` (then ``generator`` seeds it).

        The official ``weight`` argument is absent on purpose: v1.3/v1.4 ignore it.
        """
        cfg = self.config
        feat = F.leaky_relu(self.conv_body_first(x), LEAKY_SLOPE)
        skips = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.append(feat)
        feat = F.leaky_relu(self.final_conv(feat), LEAKY_SLOPE)

        style_code = self.final_linear(feat.flatten(1))  # NCHW order, whatever the memory format
        if cfg.different_w:
            style_code = style_code.view(style_code.shape[0], -1, cfg.num_style_feat)

        conditions, rgbs = [], []
        for level, block in enumerate(self.conv_body_up):
            feat = block(feat + skips[-1 - level])  # deepest skip first
            conditions.append((self.condition_scale[level](feat), self.condition_shift[level](feat)))
            if return_rgb:
                rgbs.append(self.toRGB[level](feat))

        decoder = self.stylegan_decoder
        noise = (decoder.random_noise(x.shape[0], generator) if randomize_noise
                 else decoder.stored_noise())
        image = decoder(style_code, conditions, noise, input_is_latent=cfg.input_is_latent)
        return GFPGANOutput(image=image, rgbs=rgbs, style_code=style_code)


# --- checkpoints ---------------------------------------------------------------------------


def gfpgan_keys_from_official(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """Our state dict from what ``torch.load`` returns for GFPGANv1.3.pth / GFPGANv1.4.pth.

    The file is a dict holding the generator under ``params_ema`` (the EMA weights, the only
    copy in the released files); training snapshots may have just ``params``. Like GFPGANer we
    take ``params_ema`` when present, else ``params``. Names are used unchanged.
    """
    if not isinstance(checkpoint, Mapping):
        raise WeightsError(f"not a GFPGAN checkpoint: torch.load gave a {type(checkpoint).__name__}")
    key = next((k for k in OFFICIAL_KEYS if isinstance(checkpoint.get(k), Mapping)), None)
    if key is None:
        raise WeightsError(f"not a GFPGAN checkpoint: no 'params_ema' or 'params' among the "
                           f"top-level keys {sorted(map(str, checkpoint))[:6]}")
    state = dict(checkpoint[key])
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"not a GFPGAN checkpoint: {key}[{name!r}] is a "
                               f"{type(value).__name__}, not a tensor")
    return state


def gfpgan_official_file(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Wrap our state dict as the released files store it, for writing deterministic weights."""
    return {"params_ema": dict(state_dict)}
