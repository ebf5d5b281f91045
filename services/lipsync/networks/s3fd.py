"""S3FD face detector (Zhang et al., ICCV 2017, "S³FD: Single Shot Scale-invariant Face Detector"),
as the port that Wav2Lip vendors from the face-alignment project runs it.

Wav2Lip finds the face box of every frame with this network, so its boxes (and therefore the
crops the generator sees) depend on reproducing it exactly. A VGG-16 trunk feeds six detection
sources (strides 4 … 128) with one 3x3 classification head and one 3x3 box head each:

* the port's ``fc6`` is a plain 3x3 conv with padding 3 (the paper's is dilated), so from level 4
  on the maps are (H/32 + 4) x (W/32 + 4), then halved twice;
* ``conv3_3``, ``conv4_3``, ``conv5_3`` are L2-normalised across channels with a learnt
  per-channel scale (initial 10, 8, 5) before their heads, because their activations are much
  larger than the deeper sources';
* the first classification head predicts 3 background scores and 1 face score and keeps the
  maximum background ("max-out", the paper's remedy for the many small negative anchors).

Pre- and post-processing (the mean-subtracted input; softmax, anchors, box decoding, NMS,
the box Wav2Lip keeps) live in ``services/lipsync/s3fd_detect.py``.

Our own module; its state_dict names equal ``s3fd.pth``'s (a plain state dict, no prefix).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.services.common.checkpoints import load_strict, read_checkpoint

NORM_BLOCKS = (3, 4, 5)  # VGG blocks whose last conv is a (L2-normalised) detection source


@dataclass
class S3FDConfig:
    """Layer widths of the released ``s3fd.pth``; only the defaults load that checkpoint."""

    in_channels: int = 3
    vgg_widths: tuple[int, ...] = (64, 128, 256, 512, 512)
    vgg_depths: tuple[int, ...] = (2, 2, 3, 3, 3)
    fc_width: int = 1024
    fc6_padding: int = 3  # no dilation in this port: every level-4+ map grows by 4
    extra_widths: tuple[tuple[int, int], ...] = ((256, 512), (128, 256))  # conv6_*, conv7_*
    l2norm_scales: tuple[float, ...] = (10.0, 8.0, 5.0)  # conv3_3, conv4_3, conv5_3
    l2norm_eps: float = 1e-10
    first_conf_channels: int = 4  # 3 background (max-out) + 1 face


class L2Norm(nn.Module):
    """x / (‖x‖₂ over channels + eps) · weight[c]: evens out the scale of shallow sources."""

    def __init__(self, channels: int, scale: float, eps: float = 1e-10) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight.view(1, -1, 1, 1)


class S3FD(nn.Module):
    """[B, 3, H, W] mean-subtracted RGB → [cls1, reg1, …, cls6, reg6] (logits, box offsets)."""

    def __init__(self, config: S3FDConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or S3FDConfig()
        # Registration order is the checkpoint's state_dict order: trunk, extras, norms, heads.
        cin = cfg.in_channels
        for block, (width, depth) in enumerate(zip(cfg.vgg_widths, cfg.vgg_depths, strict=True), 1):
            for i in range(1, depth + 1):
                setattr(self, f"conv{block}_{i}", nn.Conv2d(cin, width, 3, padding=1))
                cin = width
        self.fc6 = nn.Conv2d(cin, cfg.fc_width, 3, padding=cfg.fc6_padding)
        self.fc7 = nn.Conv2d(cfg.fc_width, cfg.fc_width, 1)
        cin = cfg.fc_width
        for block, (mid, out) in enumerate(cfg.extra_widths, 6):
            setattr(self, f"conv{block}_1", nn.Conv2d(cin, mid, 1))
            setattr(self, f"conv{block}_2", nn.Conv2d(mid, out, 3, stride=2, padding=1))
            cin = out

        # The three normalised sources are the last conv of VGG blocks 3, 4, 5.
        for block, scale in zip(NORM_BLOCKS, cfg.l2norm_scales, strict=True):
            norm = L2Norm(cfg.vgg_widths[block - 1], scale, cfg.l2norm_eps)
            setattr(self, f"conv{block}_{cfg.vgg_depths[block - 1]}_norm", norm)

        extras = range(6, 6 + len(cfg.extra_widths))
        self.head_names = [f"conv{b}_{cfg.vgg_depths[b - 1]}_norm" for b in NORM_BLOCKS]
        self.head_names += ["fc7"] + [f"conv{b}_2" for b in extras]
        source_widths = [cfg.vgg_widths[b - 1] for b in NORM_BLOCKS]
        source_widths += [cfg.fc_width] + [out for _, out in cfg.extra_widths]
        for level, (name, width) in enumerate(zip(self.head_names, source_widths, strict=True)):
            conf = cfg.first_conf_channels if level == 0 else 2
            setattr(self, f"{name}_mbox_conf", nn.Conv2d(width, conf, 3, padding=1))
            setattr(self, f"{name}_mbox_loc", nn.Conv2d(width, 4, 3, padding=1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        cfg = self.config
        sources: list[torch.Tensor] = []
        for block, depth in enumerate(cfg.vgg_depths, 1):
            for i in range(1, depth + 1):
                x = F.relu(getattr(self, f"conv{block}_{i}")(x))
            if block in NORM_BLOCKS:  # taken before the pooling
                sources.append(getattr(self, f"conv{block}_{depth}_norm")(x))
            x = F.max_pool2d(x, 2, 2)
        x = F.relu(self.fc6(x))
        x = F.relu(self.fc7(x))
        sources.append(x)
        for block in range(6, 6 + len(cfg.extra_widths)):
            x = F.relu(getattr(self, f"conv{block}_1")(x))
            x = F.relu(getattr(self, f"conv{block}_2")(x))
            sources.append(x)

        maps: list[torch.Tensor] = []
        for level, (name, source) in enumerate(zip(self.head_names, sources, strict=True)):
            cls = getattr(self, f"{name}_mbox_conf")(source)
            if level == 0:  # max-out background: [max(bg0, bg1, bg2), face]
                background = cls[:, :-1].amax(dim=1, keepdim=True)
                cls = torch.cat([background, cls[:, -1:]], dim=1)
            maps += [cls, getattr(self, f"{name}_mbox_loc")(source)]
        return maps


def s3fd_keys_from_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map ``s3fd.pth`` keys to ours: the identity, because our attribute names reproduce the
    official ones (``conv1_1`` … ``conv7_2_mbox_loc``); a ``module.`` prefix, if a re-saved copy
    carries one, is stripped."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def load_s3fd(path: Path) -> S3FD:
    """S3FD with the weights of an official ``s3fd.pth`` (read on CPU, strict)."""
    state = read_checkpoint(path)
    net = load_strict(S3FD(), s3fd_keys_from_official(state), str(path))
    return net.eval()
