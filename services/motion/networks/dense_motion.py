"""LivePortrait's dense motion network: sparse keypoint motion → dense 3-D flow + occlusion.

Part of the warping module W of LivePortrait (Guo et al., 2024, arXiv:2407.03168). The
design is FOMM's dense motion network (Siarohin et al., "First Order Motion Model for Image
Animation", NeurIPS 2019) lifted to 3-D feature volumes, with zeroth-order motion only:

1. every keypoint k proposes a motion "a point near driving kp k came from near source kp k"
   (a pure translation: no Jacobians), plus one identity motion for the background;
2. the compressed source volume is warped by each proposal, and a Gaussian heatmap of
   (driving − source) tells the network where each proposal is meant to apply;
3. a 3-D hourglass looks at all K+1 warped volumes and predicts a per-voxel softmax over the
   proposals; the dense deformation is the mask-weighted sum of the proposals;
4. the hourglass output, flattened over depth, gives a 2-D occlusion map (sigmoid).

Coordinates follow ``grid_sample``'s convention: (x, y, z) in [-1, 1], x along width (right),
y along height (down), z along depth; samples with ``align_corners=False`` like upstream.
Module attribute names are the official checkpoint's (prefix ``dense_motion_network.``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.services.common.grid_sampling import sample


@dataclass
class DenseMotionConfig:
    """models.yaml ``dense_motion_params``, plus the three values W passes down."""

    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_depth: int = 16
    compress: int = 4
    # set by WarpingNetwork from its own config (models.yaml keeps them at W's level)
    num_kp: int = 21
    feature_channel: int = 32
    estimate_occlusion_map: bool = True
    # fixed in upstream code, not in models.yaml: the heatmap Gaussians' variance
    kp_variance: float = 0.01


@dataclass(frozen=True)
class DenseMotion:
    """What the dense motion network returns; ``occlusion_map`` is None when not estimated."""

    mask: torch.Tensor                   # [B, K+1, D, H, W], softmax over the proposals
    deformation: torch.Tensor            # [B, D, H, W, 3], (x, y, z) in grid_sample units
    occlusion_map: torch.Tensor | None   # [B, 1, H, W] in (0, 1)


def make_coordinate_grid(spatial_size: tuple[int, int, int], ref: torch.Tensor) -> torch.Tensor:
    """Identity sampling grid [D, H, W, 3] holding (x, y, z), each spanning exactly [-1, 1].

    The end points are the first and last voxel centres (i / (n-1)), computed the same way
    as upstream so the grid is bit-identical; dtype and device follow ``ref``.
    """
    d, h, w = spatial_size

    def axis(n: int) -> torch.Tensor:
        return 2 * (torch.arange(n, dtype=ref.dtype, device=ref.device) / (n - 1)) - 1

    zz, yy, xx = torch.meshgrid(axis(d), axis(h), axis(w), indexing="ij")
    return torch.stack([xx, yy, zz], dim=-1)


def keypoint_gaussians(kp: torch.Tensor, spatial_size: tuple[int, int, int], variance: float) -> torch.Tensor:
    """Unnormalised Gaussian bump per keypoint: kp [B, K, 3] → [B, K, D, H, W]."""
    grid = make_coordinate_grid(spatial_size, kp)                    # [D, H, W, 3]
    diff = grid[None, None] - kp[:, :, None, None, None, :]          # [B, K, D, H, W, 3]
    return torch.exp(-0.5 * diff.pow(2).sum(-1) / variance)


class DownBlock3d(nn.Module):
    """conv 3³ → BN → ReLU → 2×2 average pool in H and W (depth is kept)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), kernel_size=(1, 2, 2))


class UpBlock3d(nn.Module):
    """Nearest ×2 upsampling in H and W (depth is kept) → conv 3³ → BN → ReLU."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
        return F.relu(self.norm(self.conv(x)))


def _width(config: DenseMotionConfig, level: int) -> int:
    """Channels of the hourglass at ``level`` (0 = full resolution)."""
    return min(config.max_features, config.block_expansion * 2**level)


class HourglassEncoder(nn.Module):
    """``num_blocks`` DownBlock3d; returns the input and every level's output (the skips)."""

    def __init__(self, config: DenseMotionConfig, in_features: int) -> None:
        super().__init__()
        widths = [in_features] + [_width(config, i + 1) for i in range(config.num_blocks)]
        pairs = zip(widths[:-1], widths[1:], strict=True)
        self.down_blocks = nn.ModuleList(DownBlock3d(a, b) for a, b in pairs)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    """UpBlock3d per level, each concatenated with the encoder's skip; then conv → BN → ReLU.

    The last skip is the hourglass input itself, so the output has
    ``block_expansion + in_features`` channels.
    """

    def __init__(self, config: DenseMotionConfig, in_features: int) -> None:
        super().__init__()
        blocks = []
        for i in reversed(range(config.num_blocks)):
            # the deepest block gets the bottleneck alone; the others also get a skip
            fan_in = (1 if i == config.num_blocks - 1 else 2) * _width(config, i + 1)
            blocks.append(UpBlock3d(fan_in, _width(config, i)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = config.block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        skips = list(skips)
        out = skips.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass3d(nn.Module):
    """3-D U-Net without a bottleneck block; pools H and W ``num_blocks`` times."""

    def __init__(self, config: DenseMotionConfig, in_features: int) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(config, in_features)
        self.decoder = HourglassDecoder(config, in_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class DenseMotionNetwork(nn.Module):
    """Predicts the deformation [B, D, H, W, 3] and the occlusion map [B, 1, H, W]."""

    def __init__(self, config: DenseMotionConfig | None = None) -> None:
        super().__init__()
        config = config or DenseMotionConfig()
        self.config = config
        k1 = config.num_kp + 1
        self.hourglass = Hourglass3d(config, in_features=k1 * (config.compress + 1))
        self.mask = nn.Conv3d(self.hourglass.out_filters, k1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(config.feature_channel, config.compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(config.compress, affine=True)
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters * config.reshape_depth, 1, kernel_size=7, padding=3)
            if config.estimate_occlusion_map else None
        )

    def sparse_motions(self, feature: torch.Tensor, kp_source: torch.Tensor,
                       kp_driving: torch.Tensor) -> torch.Tensor:
        """Where each driving voxel samples the source, per proposal: [B, K+1, D, H, W, 3].

        Proposal 0 is the identity (background); proposal k translates by
        kp_source[k] − kp_driving[k].
        """
        b, _, d, h, w = feature.shape
        identity = make_coordinate_grid((d, h, w), kp_source)[None, None]   # [1, 1, D, H, W, 3]
        # (grid − driving) + source, in this order, as upstream rounds it
        per_kp = identity - kp_driving[:, :, None, None, None, :] + kp_source[:, :, None, None, None, :]
        return torch.cat([identity.expand(b, 1, d, h, w, 3), per_kp], dim=1)

    @staticmethod
    def deformed_features(feature: torch.Tensor, motions: torch.Tensor) -> torch.Tensor:
        """The compressed source volume warped by every proposal: [B, K+1, C, D, H, W]."""
        b, c, d, h, w = feature.shape
        k1 = motions.shape[1]
        repeated = feature[:, None].expand(b, k1, c, d, h, w).reshape(b * k1, c, d, h, w)
        warped = sample(repeated, motions.reshape(b * k1, d, h, w, 3))  # grid made contiguous
        return warped.view(b, k1, c, d, h, w)

    def heatmaps(self, spatial_size: tuple[int, int, int], kp_source: torch.Tensor,
                 kp_driving: torch.Tensor) -> torch.Tensor:
        """Gaussian(driving) − Gaussian(source) per keypoint, zeros for the background:
        [B, K+1, 1, D, H, W]."""
        var = self.config.kp_variance
        heat = (keypoint_gaussians(kp_driving, spatial_size, var)
                - keypoint_gaussians(kp_source, spatial_size, var))
        background = heat.new_zeros(heat.shape[0], 1, *spatial_size)
        return torch.cat([background, heat], dim=1).unsqueeze(2)

    def forward(self, feature: torch.Tensor, kp_source: torch.Tensor,
                kp_driving: torch.Tensor) -> DenseMotion:
        """feature [B, C, D, H, W], keypoints [B, K, 3] → mask, deformation, occlusion map."""
        b, _, d, h, w = feature.shape
        feature = F.relu(self.norm(self.compress(feature)))

        motions = self.sparse_motions(feature, kp_source, kp_driving)
        deformed = self.deformed_features(feature, motions)
        heat = self.heatmaps((d, h, w), kp_source, kp_driving)
        # per proposal: its heatmap channel, then its warped features
        x = torch.cat([heat, deformed], dim=2).view(b, -1, d, h, w)

        prediction = self.hourglass(x)
        mask = F.softmax(self.mask(prediction), dim=1)                    # [B, K+1, D, H, W]
        deformation = (motions * mask.unsqueeze(-1)).sum(dim=1)          # [B, D, H, W, 3]
        occlusion_map = None
        if self.occlusion is not None:
            flat = prediction.reshape(b, -1, h, w)                        # channels × depth
            occlusion_map = torch.sigmoid(self.occlusion(flat))
        return DenseMotion(mask=mask, deformation=deformation, occlusion_map=occlusion_map)
