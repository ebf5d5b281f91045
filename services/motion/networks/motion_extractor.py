"""Motion extractor M of LivePortrait (Guo et al., 2024, arXiv:2407.03168).

M reads one 256×256 face crop and predicts, in a single pass, everything the implicit
keypoint model needs: 21 canonical 3-D keypoints, head pose as 66-bin logits for pitch, yaw
and roll (3° bins), translation, per-keypoint expression offsets and a scale. It runs once
per source photo, and once per driving frame when a template is extracted from a video.

The backbone is a ConvNeXt V2 "tiny" (Woo et al., 2023, "ConvNeXt V2: Co-designing and
Scaling ConvNets with Masked Autoencoders", arXiv:2301.00808): a 4×4/4 patchify stem, four
stages of blocks (depths 3, 3, 9, 3; widths 96, 192, 384, 768) joined by 2×2/2
downsampling convs, global average pooling and a final LayerNorm. Each block is a
depthwise 7×7 conv, LayerNorm, pointwise MLP (×4 expansion, GELU) with Global Response
Normalization (GRN), and a residual connection. LivePortrait replaces the classifier by
seven linear heads, one per quantity.

Our own module; its state_dict names equal ``motion_extractor.pth``'s (``detector.`` is
the official attribute holding the backbone and heads).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch
from torch import nn


@dataclass
class MotionExtractorConfig:
    """Hyper-parameters of M; defaults are ``motion_extractor_params`` of the official
    models.yaml (num_kp 21, backbone convnextv2_tiny) and ConvNeXt V2 tiny's depths/dims."""

    num_kp: int = 21
    num_bins: int = 66  # head-pose bins of 3° each, covering −99°..99°
    in_channels: int = 3
    depths: tuple[int, ...] = (3, 3, 9, 3)
    dims: tuple[int, ...] = (96, 192, 384, 768)
    mlp_ratio: int = 4
    norm_eps: float = 1e-6  # every LayerNorm of ConvNeXt V2, stem to final norm
    grn_eps: float = 1e-6
    drop_path_rate: float = 0.0  # stochastic depth; only ever active in training


@dataclass(frozen=True)
class MotionHeads:
    """M's raw outputs, named as the official network's dict keys."""

    pitch: torch.Tensor  # [B, num_bins] logits
    yaw: torch.Tensor  # [B, num_bins] logits
    roll: torch.Tensor  # [B, num_bins] logits
    t: torch.Tensor  # [B, 3]
    exp: torch.Tensor  # [B, 3·num_kp]
    scale: torch.Tensor  # [B, 1]
    kp: torch.Tensor  # [B, 3·num_kp] canonical keypoints

    def to(self, *args, **kwargs) -> MotionHeads:
        """Every head through ``Tensor.to(*args, **kwargs)`` (device, dtype)."""
        return MotionHeads(**{f.name: getattr(self, f.name).to(*args, **kwargs)
                              for f in fields(self)})


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW tensor ("channels_first" in ConvNeXt).

    The stem and the downsampling layers normalise feature maps before the blocks' permute
    to channels-last, so the statistics run over dim 1 at every pixel.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class GRN(nn.Module):
    """Global Response Normalization on channels-last [B,H,W,C] (ConvNeXt V2, eq. 1-3).

    Each channel's L2 norm over the spatial map is divided by the mean norm across channels,
    which makes channels compete and prevents the feature collapse seen in ConvNeXt V1's MLP.
    gamma and beta start at zero, so a fresh GRN is the identity (the trailing ``+ x``).
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + self.eps)
        return self.gamma * (x * nx) + self.beta + x


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop a sample's whole residual branch, rescale survivors."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class ConvNeXtV2Block(nn.Module):
    """dwconv 7×7 → LayerNorm → Linear ×4 → GELU → GRN → Linear, plus the input.

    The pointwise convs are Linear layers on a channels-last view (as in the paper's code),
    which is also why the official checkpoint stores them as 2-D weights.
    """

    def __init__(self, dim: int, mlp_ratio: int = 4, norm_eps: float = 1e-6, grn_eps: float = 1e-6,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.pwconv1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = nn.GELU()  # exact erf form, as the paper's
        self.grn = GRN(mlp_ratio * dim, eps=grn_eps)
        self.pwconv2 = nn.Linear(mlp_ratio * dim, dim)
        self.drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # NCHW → NHWC
        y = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(y)))))
        y = y.permute(0, 3, 1, 2)  # NHWC → NCHW
        return x + drop_path(y, self.drop_path_rate, self.training)


class ConvNeXtV2(nn.Module):
    """ConvNeXt V2 backbone with LivePortrait's seven linear heads (official name: ``detector``).

    Attribute order reproduces the official state_dict order (downsample_layers, stages,
    norm, then fc_kp, fc_scale, fc_pitch, fc_yaw, fc_roll, fc_t, fc_exp).
    """

    def __init__(self, cfg: MotionExtractorConfig) -> None:
        super().__init__()
        if len(cfg.depths) != len(cfg.dims):
            raise ValueError("depths and dims must have one entry per stage")
        dims = cfg.dims
        # downsample_layers[0] is the stem (conv then norm); the others are norm then conv.
        self.downsample_layers = nn.ModuleList([
            nn.Sequential(
                nn.Conv2d(cfg.in_channels, dims[0], kernel_size=4, stride=4),
                LayerNorm2d(dims[0], eps=cfg.norm_eps),
            )
        ])
        for i in range(len(dims) - 1):
            self.downsample_layers.append(nn.Sequential(
                LayerNorm2d(dims[i], eps=cfg.norm_eps),
                nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2),
            ))
        # Drop-path rate grows linearly with depth over all blocks (0 at the first block).
        # (Plain Python, not torch.linspace: the network can then be built on the meta device.)
        n_blocks = sum(cfg.depths)
        rates = [cfg.drop_path_rate * i / max(1, n_blocks - 1) for i in range(n_blocks)]
        self.stages = nn.ModuleList()
        first = 0
        for dim, depth in zip(dims, cfg.depths, strict=True):
            self.stages.append(nn.Sequential(*(
                ConvNeXtV2Block(dim, cfg.mlp_ratio, cfg.norm_eps, cfg.grn_eps, rates[first + j])
                for j in range(depth)
            )))
            first += depth
        self.norm = nn.LayerNorm(dims[-1], eps=cfg.norm_eps)

        width, n3 = dims[-1], 3 * cfg.num_kp
        self.fc_kp = nn.Linear(width, n3)
        self.fc_scale = nn.Linear(width, 1)
        self.fc_pitch = nn.Linear(width, cfg.num_bins)
        self.fc_yaw = nn.Linear(width, cfg.num_bins)
        self.fc_roll = nn.Linear(width, cfg.num_bins)
        self.fc_t = nn.Linear(width, 3)
        self.fc_exp = nn.Linear(width, n3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B,C,H,W] → pooled, normalised [B, dims[-1]]."""
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(down(x))
        return self.norm(x.mean(dim=(-2, -1)))

    def forward(self, x: torch.Tensor) -> MotionHeads:
        f = self.features(x)
        return MotionHeads(
            pitch=self.fc_pitch(f),
            yaw=self.fc_yaw(f),
            roll=self.fc_roll(f),
            t=self.fc_t(f),
            exp=self.fc_exp(f),
            scale=self.fc_scale(f),
            kp=self.fc_kp(f),
        )


class MotionExtractor(nn.Module):
    """Image [B,3,H,W] in 0..1 (no mean/std normalisation) → :class:`MotionHeads`.

    Any H, W divisible by 32 works (the official crop is 256); outputs are raw: the pose
    logits become degrees and the keypoints are posed in ``talkinghead.services.motion.keypoints``.
    """

    def __init__(self, config: MotionExtractorConfig | None = None) -> None:
        super().__init__()
        self.config = config or MotionExtractorConfig()
        self.detector = ConvNeXtV2(self.config)

    def forward(self, image: torch.Tensor) -> MotionHeads:
        return self.detector(image)


def motion_keys_from_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map ``motion_extractor.pth`` keys to ours: the identity, because our attribute names
    reproduce the official ones (``detector.stages.2.4.grn.gamma`` etc.). A ``module.``
    prefix left by DataParallel training, if any, is stripped."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}
