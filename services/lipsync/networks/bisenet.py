"""BiSeNet face parser (Yu et al., ECCV 2018, "BiSeNet: Bilateral Segmentation Network for
Real-time Semantic Segmentation"), in the form face-parsing.PyTorch trained on CelebAMask-HQ
(19 classes) and MuseTalk 1.5 runs to draw its jaw mask (``face-parse-bisent/79999_iter.pth``).

The released network has no spatial path: the ResNet-18 stage-3 feature (1/8) stands in for
it. Its parts:

* context path: ResNet-18 (``cp.resnet``; BasicBlocks, no fc) giving 1/8, 1/16 and 1/32
  features; a global-average "tail" (1x1 ConvBNReLU 512→128) broadcast back by nearest
  upsampling; attention refinement (ConvBNReLU, then a sigmoid channel attention from the
  pooled feature: 1x1 conv without bias + BN) on the 1/32 and 1/16 features; each sum is
  upsampled ×2 (nearest) and passed through a 3x3 ConvBNReLU head;
* feature fusion: concat(1/8 ResNet feature, refined 1/8 context) → 1x1 ConvBNReLU 256, then
  ``feat · attention + feat`` with a squeeze (256→64→256, ReLU, sigmoid) attention;
* three heads (3x3 ConvBNReLU + 1x1 conv to 19 classes, every conv without bias), upsampled
  bilinearly with ``align_corners=True`` to the input size. MuseTalk uses the first.

Our own module, written from the paper and the checkpoint's names and shapes; its state_dict
names equal ``79999_iter.pth``'s (plain, no prefix), so :func:`bisenet_keys_from_official` is
the identity apart from the repairs named there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.services.common.checkpoints import (
    fill_batchnorm_counters,
    load_strict,
    read_checkpoint,
    strip_prefix,
)


@dataclass(frozen=True)
class BiSeNetConfig:
    """Widths of the released parser (BiSeNet(n_classes=19) on ResNet-18)."""

    classes: int = 19
    stem_width: int = 64
    stage_widths: tuple[int, ...] = (64, 128, 256, 512)  # ResNet-18 layers 1-4, 2 blocks each
    context_width: int = 128   # attention refinement and heads of the context path
    fuse_width: int = 256      # feature fusion output (= 1/8 ResNet 128 + context 128)
    fuse_reduction: int = 4    # fusion attention's squeeze
    aux_width: int = 64        # the two auxiliary heads' hidden width


@dataclass(frozen=True)
class BiSeNetOutput:
    """The three logit maps at the input size; MuseTalk reads ``out`` (upstream's [0])."""

    out: torch.Tensor    # [B, classes, H, W] from the fused 1/8 feature
    out16: torch.Tensor  # from the refined 1/8 context (auxiliary)
    out32: torch.Tensor  # from the refined 1/16 context (auxiliary)


class ConvBNReLU(nn.Module):
    """conv (no bias) → BN → ReLU; names ``conv``, ``bn`` as in the checkpoint."""

    def __init__(self, cin: int, cout: int, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, 1, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet-18 block: two 3x3 conv+BN, a 1x1 conv+BN shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


class ResNet18(nn.Module):
    """The backbone, without its classifier: features at 1/8, 1/16 and 1/32."""

    def __init__(self, c: BiSeNetConfig):
        super().__init__()
        self.conv1 = nn.Conv2d(3, c.stem_width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(c.stem_width)
        widths = (c.stem_width, *c.stage_widths)
        for i in range(4):
            stride = 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", nn.Sequential(
                BasicBlock(widths[i], widths[i + 1], stride),
                BasicBlock(widths[i + 1], widths[i + 1], 1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class AttentionRefinement(nn.Module):
    """ConvBNReLU, scaled per channel by sigmoid(BN(conv1x1(global average)))."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 3)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        attention = torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean((2, 3), keepdim=True))))
        return feat * attention


class ContextPath(nn.Module):
    """ResNet-18 + global context + attention refinement; returns the 1/8 ResNet feature
    and the refined context at 1/8 and 1/16."""

    def __init__(self, c: BiSeNetConfig):
        super().__init__()
        w = c.context_width
        self.resnet = ResNet18(c)
        self.arm16 = AttentionRefinement(c.stage_widths[2], w)
        self.arm32 = AttentionRefinement(c.stage_widths[3], w)
        self.conv_head32 = ConvBNReLU(w, w, 3)
        self.conv_head16 = ConvBNReLU(w, w, 3)
        self.conv_avg = ConvBNReLU(c.stage_widths[3], w, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        tail = self.conv_avg(feat32.mean((2, 3), keepdim=True))
        sum32 = self.arm32(feat32) + F.interpolate(tail, feat32.shape[2:], mode="nearest")
        up32 = self.conv_head32(F.interpolate(sum32, feat16.shape[2:], mode="nearest"))
        sum16 = self.arm16(feat16) + up32
        up16 = self.conv_head16(F.interpolate(sum16, feat8.shape[2:], mode="nearest"))
        return feat8, up16, up32


class FeatureFusion(nn.Module):
    """Concat → 1x1 ConvBNReLU → feat · squeeze-excite attention + feat."""

    def __init__(self, cin: int, cout: int, reduction: int):
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, 1)
        self.conv1 = nn.Conv2d(cout, cout // reduction, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // reduction, cout, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        attention = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean((2, 3), keepdim=True)))))
        return feat * attention + feat


class Head(nn.Module):
    """3x3 ConvBNReLU then a 1x1 conv (no bias) to the class logits."""

    def __init__(self, cin: int, mid: int, classes: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid, 3)
        self.conv_out = nn.Conv2d(mid, classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """[B, 3, H, W] ImageNet-normalised RGB (H, W divisible by 32) → logits at H x W."""

    def __init__(self, config: BiSeNetConfig | None = None):
        super().__init__()
        c = self.config = config or BiSeNetConfig()
        self.cp = ContextPath(c)
        self.ffm = FeatureFusion(c.stage_widths[1] + c.context_width, c.fuse_width,
                                 c.fuse_reduction)
        self.conv_out = Head(c.fuse_width, c.fuse_width, c.classes)
        self.conv_out16 = Head(c.context_width, c.aux_width, c.classes)
        self.conv_out32 = Head(c.context_width, c.aux_width, c.classes)

    def forward(self, x: torch.Tensor, aux: bool = True) -> BiSeNetOutput:
        """``aux=False`` skips the two auxiliary heads (their maps come back empty)."""
        size = x.shape[2:]
        feat8, context8, context16 = self.cp(x)

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, size, mode="bilinear", align_corners=True)

        out = up(self.conv_out(self.ffm(feat8, context8)))
        if not aux:
            return BiSeNetOutput(out, out.new_empty(0), out.new_empty(0))
        return BiSeNetOutput(out, up(self.conv_out16(context8)), up(self.conv_out32(context16)))


# ---- checkpoint ----------------------------------------------------------------------------

def bisenet_keys_from_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``79999_iter.pth`` keys → ours: the same names (our module reproduces them). A
    ``module.`` prefix (a DataParallel re-save) is stripped, and a missing BatchNorm
    ``num_batches_tracked`` (unused in eval) is filled with 0, as PyTorch's BatchNorm loader
    does, so the load stays strict."""
    return fill_batchnorm_counters(strip_prefix(state_dict, "module."))


def resnet18_keys_from_torchvision(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``resnet18-5c106cde.pth`` (torchvision's ImageNet ResNet-18) → our backbone's names:
    everything but the classifier (``fc.*``). Upstream copies it into the backbone before
    ``79999_iter.pth`` overwrites every one of those values, so we only check that it fits."""
    return fill_batchnorm_counters({k: v for k, v in state_dict.items() if not k.startswith("fc.")})


def load_bisenet(path: Path, backbone_path: Path | None = None) -> BiSeNet:
    """BiSeNet with an official ``79999_iter.pth`` (CPU, strict). ``backbone_path``, when
    given, is checked to fit the backbone strictly too (its values are then replaced)."""
    net = BiSeNet()
    if backbone_path is not None:
        load_strict(net.cp.resnet, resnet18_keys_from_torchvision(read_checkpoint(backbone_path)),
                    str(backbone_path))
    load_strict(net, bisenet_keys_from_official(read_checkpoint(path)), str(path))
    return net.eval()
