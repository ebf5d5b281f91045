"""The StyleGAN2 generator in its "clean" form, as GFPGAN's decoder (Karras et al., "Analyzing
and Improving the Image Quality of StyleGAN", CVPR 2020; Wang et al., "Towards Real-World
Blind Face Restoration with Generative Facial Prior", CVPR 2021).

"Clean" means plain PyTorch: leaky ReLU instead of the fused bias-activation op, bilinear
resampling instead of upfirdn2d, and no run-time equalised-learning-rate scale (the released
weights already carry it). GFPGAN feeds the decoder one latent per layer straight from its
encoder, so the mapping MLP exists only because the checkpoint holds it.

    constant [1,512,4,4] → style conv → ToRGB ─────────────────────────────┐ rgb 4²
    per level 8² … 512²:  style conv (×2 up) → SFT → style conv → ToRGB ← rgb ×2 up + …

Attribute names and registration order reproduce ``stylegan_decoder.*`` of the official
GFPGANv1.3/v1.4 files, so they load with ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.2


def stylegan_channels(channel_multiplier: int, narrow: float) -> dict[int, int]:
    """Feature width at each resolution: 512 up to 32², then shrinking with the size."""
    widths = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier,
              128: 128 * channel_multiplier, 256: 64 * channel_multiplier,
              512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    return {size: int(width * narrow) for size, width in widths.items()}


class NormStyleCode(nn.Module):
    """Pixel-norm of a z code (the mapping MLP's first step); no parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """Conv whose kernel is scaled per input channel by a style, then (optionally) demodulated.

    The weight is stored 5-D, [1, out, in, k, k], and modulated per sample; the batch is folded
    into the channels and run as one grouped conv. Demodulation rescales every output filter
    to unit norm, which replaces StyleGAN's instance norm. Upsampling, when asked for, is a
    plain bilinear ×2 of the input before the conv (the clean variant's choice).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int,
                 *, demodulate: bool = True, upsample: bool = False, eps: float = 1e-8) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.demodulate, self.upsample, self.eps = demodulate, upsample, eps
        self.modulation = nn.Linear(num_style_feat, in_channels)
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size)
                                   / math.sqrt(in_channels * kernel_size**2))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        weight = self.weight * self.modulation(style).view(b, 1, self.in_channels, 1, 1)
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4)) + self.eps)
            weight = weight * demod.view(b, self.out_channels, 1, 1, 1)
        weight = weight.view(b * self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        h, w = x.shape[2:]
        out = F.conv2d(x.reshape(1, b * self.in_channels, h, w), weight,
                       padding=self.kernel_size // 2, groups=b)
        return out.view(b, self.out_channels, *out.shape[2:])

    def extra_repr(self) -> str:
        return (f"in={self.in_channels}, out={self.out_channels}, k={self.kernel_size}, "
                f"demodulate={self.demodulate}, upsample={self.upsample}")


class StyleConv(nn.Module):
    """Modulated 3×3 conv, ×√2 gain, per-pixel noise, bias, leaky ReLU.

    The √2 stands in for the fused activation's gain of the original StyleGAN2 code; the
    noise strength is the single scalar ``weight``, the noise one map shared by all channels.
    """

    def __init__(self, in_channels: int, out_channels: int, num_style_feat: int,
                 *, upsample: bool = False) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, out_channels, 3, num_style_feat,
                                              demodulate=True, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out = self.modulated_conv(x, style) * math.sqrt(2)
        out = out + self.weight * noise + self.bias
        return F.leaky_relu(out, LEAKY_SLOPE)


class ToRGB(nn.Module):
    """Modulated 1×1 conv to RGB, not demodulated, plus bias; adds the previous level's image
    (bilinearly doubled) so the output is a sum of per-resolution residuals."""

    def __init__(self, in_channels: int, num_style_feat: int, *, upsample: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(in_channels, 3, 1, num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor,
                skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            if self.upsample:
                skip = F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
            out = out + skip
        return out


class ConstantInput(nn.Module):
    """The learned 4×4 start of every image, repeated over the batch."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.weight.repeat(batch, 1, 1, 1)


class StyleGAN2DecoderSFT(nn.Module):
    """StyleGAN2 synthesis network with a spatial feature transform after each level's first
    conv: GFPGAN's U-Net supplies a (scale, shift) pair per level that bends the generative
    prior towards the degraded input.

    Layers: 1 conv at 4², then 2 per level → ``num_layers`` = 2·(log2 size − 2) + 1 convs and
    ``num_latent`` = 2·log2 size − 2 latents (each ToRGB shares its latent with the next conv).
    """

    def __init__(self, out_size: int = 512, num_style_feat: int = 512, num_mlp: int = 8,
                 channel_multiplier: int = 2, narrow: float = 1, sft_half: bool = True) -> None:
        super().__init__()
        self.num_style_feat, self.sft_half = num_style_feat, sft_half
        mlp: list[nn.Module] = [NormStyleCode()]
        for _ in range(num_mlp):  # Linear at odd indices, as in the checkpoint (style_mlp.1, .3…)
            mlp += [nn.Linear(num_style_feat, num_style_feat), nn.LeakyReLU(LEAKY_SLOPE)]
        self.style_mlp = nn.Sequential(*mlp)

        channels = stylegan_channels(channel_multiplier, narrow)
        self.log_size = int(math.log2(out_size))
        self.num_layers = 2 * (self.log_size - 2) + 1
        self.num_latent = 2 * self.log_size - 2

        self.constant_input = ConstantInput(channels[4])
        self.style_conv1 = StyleConv(channels[4], channels[4], num_style_feat)
        self.to_rgb1 = ToRGB(channels[4], num_style_feat, upsample=False)
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()  # fixed noise maps, used when noise is not randomised
        for k in range(self.num_layers):
            size = 2 ** ((k + 5) // 2)  # 4, 8, 8, 16, 16, …
            self.noises.register_buffer(f"noise{k}", torch.randn(1, 1, size, size))
        in_channels = channels[4]
        for level in range(3, self.log_size + 1):
            out_channels = channels[2**level]
            self.style_convs.append(StyleConv(in_channels, out_channels, num_style_feat, upsample=True))
            self.style_convs.append(StyleConv(out_channels, out_channels, num_style_feat))
            self.to_rgbs.append(ToRGB(out_channels, num_style_feat))
            in_channels = out_channels

    def stored_noise(self) -> list[torch.Tensor]:
        """The checkpoint's noise buffers, [1,1,r,r] each, broadcast over the batch."""
        return [getattr(self.noises, f"noise{k}") for k in range(self.num_layers)]

    def random_noise(self, batch: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Fresh N(0,1) noise per sample and layer: what the official code draws by default."""
        ref = self.constant_input.weight
        return [torch.randn(batch, 1, n.shape[2], n.shape[3], generator=generator,
                            device=ref.device, dtype=ref.dtype) for n in self.stored_noise()]

    def forward(self, latent: torch.Tensor, conditions: Sequence[tuple[torch.Tensor, torch.Tensor]],
                noise: Sequence[torch.Tensor], *, input_is_latent: bool = True) -> torch.Tensor:
        """latent [B, num_latent, F] (or [B, F], repeated for every layer); one (scale, shift)
        per level, at that level's size and half (sft_half) or all of its channels."""
        if not input_is_latent:
            latent = self.style_mlp(latent) if latent.ndim == 2 else \
                self.style_mlp(latent.flatten(0, 1)).view_as(latent)
        if latent.ndim == 2:
            latent = latent.unsqueeze(1).repeat(1, self.num_latent, 1)

        out = self.style_conv1(self.constant_input(latent.shape[0]), latent[:, 0], noise[0])
        rgb = self.to_rgb1(out, latent[:, 1])
        for level, to_rgb in enumerate(self.to_rgbs):
            i = 2 * level + 1
            out = self.style_convs[i - 1](out, latent[:, i], noise[i])
            if level < len(conditions):
                scale, shift = conditions[level]
                if self.sft_half:  # the first half of the channels keeps the pure prior
                    same, sft = out.split(out.shape[1] // 2, dim=1)
                    out = torch.cat([same, sft * scale + shift], dim=1)
                else:
                    out = out * scale + shift
            out = self.style_convs[i](out, latent[:, i + 1], noise[i + 1])
            rgb = to_rgb(out, latent[:, i + 2], rgb)
        return rgb
