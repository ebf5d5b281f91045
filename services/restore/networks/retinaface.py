"""RetinaFace face detector, ResNet-50 variant (Deng et al., CVPR 2020, "RetinaFace: Single-shot
Multi-level Face Localisation in the Wild"), as facexlib runs it for GFPGAN.

GFPGAN aligns every face from the five landmarks this detector predicts, so its boxes and
landmarks (and therefore the crops the restorer sees) depend on reproducing it exactly:

* body: ResNet-50 (He et al., CVPR 2016) in torchvision's "v1.5" form (the stride sits on the
  3x3 conv of a bottleneck), conv1 … layer4; layer2/3/4 (strides 8/16/32) are the sources;
* FPN (Lin et al., CVPR 2017): 1x1 laterals to 256 channels, top-down nearest resize to the
  finer map's explicit size, 3x3 merge convs on P4 and P3 only; every conv has a BatchNorm
  and a ReLU (upstream's "leaky" slope is 0 at this width);
* SSH context module (Najibi et al., ICCV 2017) per level: a 3x3 branch (128 ch) and two
  stacked-3x3 branches (64 ch each, the 7x7 one reusing the 5x5 one's first conv),
  concatenated and passed through one ReLU;
* per level, 1x1 heads for 2 anchors: face/background logits, 4 box and 10 landmark offsets.

The input, anchors, decoding and NMS live in ``services/restore/retinaface_detect.py``.

Our own module; its state_dict names equal ``detection_Resnet50_Final.pth``'s after facexlib
strips the ``module.`` prefix (including upstream's mixed-case ``conv7X7_2``/``conv7x7_3``).
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


@dataclass
class RetinaFaceConfig:
    """Widths and anchors of the released ResNet-50 detector; only the defaults load it."""

    stem_width: int = 64
    layer_widths: tuple[int, ...] = (64, 128, 256, 512)  # bottleneck widths of layer1..4
    layer_depths: tuple[int, ...] = (3, 4, 6, 3)
    expansion: int = 4
    fpn_width: int = 256
    num_anchors: int = 2
    steps: tuple[int, ...] = (8, 16, 32)  # strides of layer2, layer3, layer4
    min_sizes: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
    variances: tuple[float, float] = (0.1, 0.2)
    bn_eps: float = 1e-5


@dataclass(frozen=True)
class RetinaFaceOutput:
    """The test-phase forward's (loc, conf, landmarks), named; P anchors over all levels."""

    loc: torch.Tensor        # [B, P, 4] box offsets
    conf: torch.Tensor       # [B, P, 2] softmax (background, face)
    landmarks: torch.Tensor  # [B, P, 10] landmark offsets


# ---- ResNet-50 body ----------------------------------------------------------------------

class Bottleneck(nn.Module):
    """1x1 reduce → 3x3 (carries the stride) → 1x1 expand, plus a projected or identity skip."""

    def __init__(self, cin: int, width: int, stride: int, expansion: int, eps: float) -> None:
        super().__init__()
        cout = width * expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=eps)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width, eps=eps)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=eps)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or cin != cout:  # checkpoint names: downsample.0 (conv), .1 (BN)
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout, eps=eps)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + skip)


class ResNetBody(nn.Module):
    """ResNet-50 without avgpool/fc → the outputs of layer2, layer3, layer4."""

    def __init__(self, cfg: RetinaFaceConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, cfg.stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(cfg.stem_width, eps=cfg.bn_eps)
        cin = cfg.stem_width
        for index, (width, depth) in enumerate(zip(cfg.layer_widths, cfg.layer_depths, strict=True)):
            blocks = []
            for i in range(depth):
                stride = 2 if (i == 0 and index > 0) else 1
                blocks.append(Bottleneck(cin, width, stride, cfg.expansion, cfg.bn_eps))
                cin = width * cfg.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
        self.out_channels = [w * cfg.expansion for w in cfg.layer_widths[1:]]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        x = self.layer1(x)
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]


# ---- FPN, SSH, heads ---------------------------------------------------------------------

def conv_bn(cin: int, cout: int, kernel: int, eps: float) -> nn.Sequential:
    """conv (no bias) + BN as a Sequential, so the checkpoint's ``.0``/``.1`` names fit; the
    ReLU, where there is one, is applied by the caller (it has no parameters)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout, eps=eps)
    )


class FPN(nn.Module):
    """Top-down pathway over C3..C5: P5 = lateral5; P4, P3 = merge(lateral + nearest(up))."""

    def __init__(self, in_channels: list[int], width: int, eps: float) -> None:
        super().__init__()
        self.output1 = conv_bn(in_channels[0], width, 1, eps)
        self.output2 = conv_bn(in_channels[1], width, 1, eps)
        self.output3 = conv_bn(in_channels[2], width, 1, eps)
        self.merge1 = conv_bn(width, width, 3, eps)
        self.merge2 = conv_bn(width, width, 3, eps)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        p3 = F.relu(self.output1(feats[0]))
        p4 = F.relu(self.output2(feats[1]))
        p5 = F.relu(self.output3(feats[2]))
        # Resize to the explicit size (floor indexing): 15x20 from 8x10 is not a plain x2.
        p4 = F.relu(self.merge2(p4 + F.interpolate(p5, size=p4.shape[-2:], mode="nearest")))
        p3 = F.relu(self.merge1(p3 + F.interpolate(p4, size=p3.shape[-2:], mode="nearest")))
        return [p3, p4, p5]


class SSH(nn.Module):
    """Three receptive fields (3x3, "5x5" = two 3x3, "7x7" = three 3x3) at half/quarter width."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.conv3X3 = conv_bn(width, width // 2, 3, eps)
        self.conv5X5_1 = conv_bn(width, width // 4, 3, eps)
        self.conv5X5_2 = conv_bn(width // 4, width // 4, 3, eps)
        self.conv7X7_2 = conv_bn(width // 4, width // 4, 3, eps)
        self.conv7x7_3 = conv_bn(width // 4, width // 4, 3, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3 = self.conv3X3(x)
        mid5 = F.relu(self.conv5X5_1(x))
        branch5 = self.conv5X5_2(mid5)
        branch7 = self.conv7x7_3(F.relu(self.conv7X7_2(mid5)))
        return F.relu(torch.cat([branch3, branch5, branch7], dim=1))


class Head(nn.Module):
    """1x1 conv → [B, H·W·anchors, values], anchors fastest (the prior order)."""

    def __init__(self, width: int, num_anchors: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(width, num_anchors * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1x1(x).permute(0, 2, 3, 1)
        return y.reshape(y.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    """[B, 3, H, W] BGR minus mean → (loc [B,P,4], softmax conf [B,P,2], landmarks [B,P,10])."""

    def __init__(self, config: RetinaFaceConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or RetinaFaceConfig()
        # Registration order is the checkpoint's state_dict order.
        self.body = ResNetBody(cfg)
        self.fpn = FPN(self.body.out_channels, cfg.fpn_width, cfg.bn_eps)
        self.ssh1 = SSH(cfg.fpn_width, cfg.bn_eps)
        self.ssh2 = SSH(cfg.fpn_width, cfg.bn_eps)
        self.ssh3 = SSH(cfg.fpn_width, cfg.bn_eps)
        levels = range(len(cfg.steps))
        a = cfg.num_anchors
        self.ClassHead = nn.ModuleList(Head(cfg.fpn_width, a, 2) for _ in levels)
        self.BboxHead = nn.ModuleList(Head(cfg.fpn_width, a, 4) for _ in levels)
        self.LandmarkHead = nn.ModuleList(Head(cfg.fpn_width, a, 10) for _ in levels)

    def forward(self, x: torch.Tensor) -> RetinaFaceOutput:
        pyramid = self.fpn(self.body(x))
        feats = [ssh(p) for ssh, p in zip((self.ssh1, self.ssh2, self.ssh3), pyramid, strict=True)]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats, strict=True)], dim=1)
        logits = torch.cat([h(f) for h, f in zip(self.ClassHead, feats, strict=True)], dim=1)
        landmarks = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats, strict=True)], dim=1)
        return RetinaFaceOutput(loc=loc, conf=F.softmax(logits, dim=-1), landmarks=landmarks)


# ---- checkpoint ----------------------------------------------------------------------------

def retinaface_keys_from_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map ``detection_Resnet50_Final.pth`` keys to ours.

    Names are otherwise identical; a leading ``module.`` (DataParallel, present in the
    released file) is stripped from every key that has one, as facexlib does. BatchNorm's
    ``num_batches_tracked`` is unused in eval and absent from some copies, so a missing one
    is filled with 0 (what PyTorch's BatchNorm loader does) to keep loading strict.
    """
    return fill_batchnorm_counters(strip_prefix(state_dict, "module."))


def load_retinaface(path: Path) -> RetinaFace:
    """RetinaFace with the weights of an official ``detection_Resnet50_Final.pth`` (CPU, strict)."""
    state = read_checkpoint(path)
    net = load_strict(RetinaFace(), retinaface_keys_from_official(state), str(path))
    return net.eval()
