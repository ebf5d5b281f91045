"""Convolutional building blocks shared by LivePortrait's networks.

LivePortrait (Guo et al., 2024, "LivePortrait: Efficient Portrait Animation with Stitching
and Retargeting Control", arXiv:2407.03168) reuses the blocks of face-vid2vid / FOMM for its
appearance extractor F and warping module W, and SPADE (Park et al., 2019, arXiv:1903.07291)
residual blocks for its generator G. These are our own modules; attribute names are chosen
so that ``state_dict()`` yields exactly the tensor names of the official checkpoints
(``conv``/``norm``/``pool``, ``conv1``/``norm1``, ``mlp_shared.0``, ``weight_orig``/
``weight_u``/``weight_v``, ...), and registration order follows the official order.

The 3-D hourglass blocks of the warping module live with that module, not here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IntOrPair = int | tuple[int, int]


class SameBlock2d(nn.Module):
    """Conv → BatchNorm → (leaky) ReLU at constant resolution: the stem of F and W."""

    def __init__(self, in_features: int, out_features: int, groups: int = 1,
                 kernel_size: IntOrPair = 3, padding: IntOrPair = 1, lrelu: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size,
                              padding=padding, groups=groups)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        # LeakyReLU with torch's default slope 0.01, as the official block uses nn.LeakyReLU().
        return F.leaky_relu(x) if self.lrelu else F.relu(x)


class DownBlock2d(nn.Module):
    """Conv → BatchNorm → ReLU → 2×2 average pool: halves the resolution in F's encoder."""

    def __init__(self, in_features: int, out_features: int, kernel_size: IntOrPair = 3,
                 padding: IntOrPair = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size,
                              padding=padding, groups=groups)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.pool = nn.AvgPool2d(kernel_size=(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class ResBlock3d(nn.Module):
    """Pre-activation 3-D residual block (BN → ReLU → conv, twice, plus identity).

    Refines F's feature volume without changing its shape. The convs are registered before
    the norms because that is the official state_dict order.
    """

    def __init__(self, in_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.conv2 = nn.Conv3d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.norm1 = nn.BatchNorm3d(in_features, affine=True)
        self.norm2 = nn.BatchNorm3d(in_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class SpectralNormConv2d(nn.Module):
    """A Conv2d whose weight is divided by its spectral norm, stored as the official files do.

    The official generator wraps its convs in ``torch.nn.utils.spectral_norm``, so its
    checkpoint holds ``weight_orig`` plus the power-iteration vectors ``weight_u`` [out] and
    ``weight_v`` [in·k·k] instead of ``weight``. We keep that layout so the file loads
    unchanged. In eval mode the effective weight is ``weight_orig / (uᵀ · W · v)`` with the
    STORED u and v (no power iteration, and u, v are used as stored even if not unit
    vectors); in train mode one power-iteration step updates u and v first, as torch does.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 dilation: int = 1, bias: bool = True, eps: float = 1e-12) -> None:
        super().__init__()
        self.padding = padding
        self.dilation = dilation
        self.eps = eps
        # Registration order (bias, weight_orig, then the buffers) is the official order.
        self.register_parameter("bias", nn.Parameter(torch.zeros(out_channels)) if bias else None)
        weight = torch.empty(out_channels, in_channels, kernel_size, kernel_size)
        nn.init.kaiming_uniform_(weight, a=5 ** 0.5)
        self.weight_orig = nn.Parameter(weight)
        fan_in = in_channels * kernel_size * kernel_size
        self.register_buffer("weight_u", F.normalize(torch.randn(out_channels), dim=0, eps=eps))
        self.register_buffer("weight_v", F.normalize(torch.randn(fan_in), dim=0, eps=eps))

    def weight(self) -> torch.Tensor:
        """The effective (spectrally normalised) convolution weight."""
        w = self.weight_orig
        w_mat = w.flatten(1)
        if self.training:
            with torch.no_grad():
                v = F.normalize(torch.mv(w_mat.t(), self.weight_u), dim=0, eps=self.eps)
                u = F.normalize(torch.mv(w_mat, v), dim=0, eps=self.eps)
                self.weight_v.copy_(v)
                self.weight_u.copy_(u)
        u, v = self.weight_u, self.weight_v
        if self.training:  # torch clones so autograd does not see the in-place update
            u, v = u.clone(), v.clone()
        sigma = torch.dot(u, torch.mv(w_mat, v))
        return w / sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), self.bias, padding=self.padding, dilation=self.dilation)


class SPADE(nn.Module):
    """Spatially-adaptive denormalisation: instance-normalise x, then scale and shift it
    per pixel by maps predicted from a conditioning image (here G's own input feature)."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int = 128) -> None:
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        # The conditioning map is brought to x's resolution by NEAREST resizing (official).
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """Residual block of two SPADE → LeakyReLU(0.2) → conv stages, with a learned
    (SPADE → 1×1 conv, no bias) shortcut when the channel count changes."""

    def __init__(self, fin: int, fout: int, label_nc: int, spectral: bool = True,
                 dilation: int = 1) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)

        def conv(cin: int, cout: int, k: int, pad: int, dil: int, bias: bool) -> nn.Module:
            if spectral:
                return SpectralNormConv2d(cin, cout, k, padding=pad, dilation=dil, bias=bias)
            return nn.Conv2d(cin, cout, k, padding=pad, dilation=dil, bias=bias)

        # Registration order (convs, then norms) is the official state_dict order.
        self.conv_0 = conv(fin, fmiddle, 3, dilation, dilation, True)
        self.conv_1 = conv(fmiddle, fout, 3, dilation, dilation, True)
        if self.learned_shortcut:
            self.conv_s = conv(fin, fout, 1, 0, 1, False)
        self.norm_0 = SPADE(fin, label_nc)
        self.norm_1 = SPADE(fmiddle, label_nc)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx
