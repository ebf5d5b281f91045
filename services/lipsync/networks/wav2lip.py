"""The Wav2Lip generator (Prajwal et al., "A Lip Sync Expert Is All You Need for Speech to
Lip Generation In the Wild", ACM MM 2020, arXiv:2008.10010).

Wav2Lip redraws a 96×96 face crop so that its mouth matches a 0.2 s window of speech. The
face input stacks a copy whose lower half is blanked (the mouth to invent) with an unmasked
reference (identity and pose); a U-Net decodes the audio embedding back to pixels, taking a
skip from every face-encoder stage:

    face  [B,6,96,96] → 7 encoder stages → 96², 48², 24², 12², 6², 3², 1² (kept as skips)
    mel   [B,1,80,16] → audio encoder → [B,512,1,1]
    audio embedding → 7 decoder stages, each output concatenated with the deepest unused skip
    → 3×3 conv unit 80→32, 1×1 conv 32→3, sigmoid → [B,3,96,96] (BGR, 0..1)

Our own module: attribute names and registration order reproduce the official
``wav2lip.pth`` / ``wav2lip_gan.pth`` tensors (after their ``module.`` prefix is removed),
so both load with ``load_state_dict(strict=True)``. The images are BGR because the official
pipeline reads frames with OpenCV; see ``services/lipsync/face_window.py`` for the data path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from talkinghead.services.common.errors import WeightsError

IntOrPair = int | tuple[int, int]
OFFICIAL_PREFIX = "module."  # torch.nn.DataParallel's, in the released files


@dataclass
class Wav2LipConfig:
    """Sizes fixed by the released checkpoints: the encoders reduce exactly these inputs to
    1×1, so other values cannot reuse the weights."""

    img_size: int = 96  # face crop side; the lower img_size // 2 rows are masked
    mel_bands: int = 80
    mel_steps: int = 16  # mel columns per window (80 per second → 0.2 s)
    bn_eps: float = 1e-5


class ConvUnit(nn.Module):
    """Conv (or transposed conv) → BatchNorm → ReLU, the only building block of Wav2Lip.

    With ``residual`` the unit's input is added to the BatchNorm output *before* the ReLU.
    Conv and norm sit in ``conv_block`` (indices 0, 1) because the checkpoint names them so.
    """

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: IntOrPair = 1,
                 padding: int = 0, *, residual: bool = False, transposed: bool = False,
                 output_padding: int = 0, eps: float = 1e-5) -> None:
        super().__init__()
        if residual and (cin != cout or stride != 1 or transposed):
            raise ValueError("a residual unit must keep its shape")
        if transposed:
            conv = nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding)
        else:
            conv = nn.Conv2d(cin, cout, kernel_size, stride, padding)
        self.conv_block = nn.Sequential(conv, nn.BatchNorm2d(cout, eps=eps))
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return torch.relu(out)


class Wav2Lip(nn.Module):
    """mel [B,1,80,16] + faces [B,6,96,96] (masked BGR, reference BGR; 0..1) → [B,3,96,96] BGR.

    The 5-D training layout is accepted too, folded into the batch and unfolded afterwards:
    mel [B,T,1,80,16] with faces [B,6,T,96,96] → [B,3,T,96,96] (time is dim 1 for the audio
    and dim 2 for the images, as the official training data loader stacks them).
    """

    def __init__(self, config: Wav2LipConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or Wav2LipConfig()

        def conv(cin: int, cout: int, k: int, s: IntOrPair = 1, p: int = 0) -> ConvUnit:
            return ConvUnit(cin, cout, k, s, p, eps=cfg.bn_eps)

        def res(c: int) -> ConvUnit:
            return ConvUnit(c, c, 3, 1, 1, residual=True, eps=cfg.bn_eps)

        def up(cin: int, cout: int, s: int = 2, p: int = 1, op: int = 1) -> ConvUnit:
            return ConvUnit(cin, cout, 3, s, p, transposed=True, output_padding=op, eps=cfg.bn_eps)

        # Each stage's output is a skip for the decoder; sizes for a 96² input.
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(conv(6, 16, 7, 1, 3)),                                # 16 @ 96²
            nn.Sequential(conv(16, 32, 3, 2, 1), res(32), res(32)),             # 32 @ 48²
            nn.Sequential(conv(32, 64, 3, 2, 1), res(64), res(64), res(64)),    # 64 @ 24²
            nn.Sequential(conv(64, 128, 3, 2, 1), res(128), res(128)),          # 128 @ 12²
            nn.Sequential(conv(128, 256, 3, 2, 1), res(256), res(256)),         # 256 @ 6²
            nn.Sequential(conv(256, 512, 3, 2, 1), res(512)),                   # 512 @ 3²
            nn.Sequential(conv(512, 512, 3, 1, 0), conv(512, 512, 1, 1, 0)),    # 512 @ 1²
        ])
        # One flat sequence; strides shrink 80×16 → 27×16 → 9×6 → 3×3 → 1×1.
        self.audio_encoder = nn.Sequential(
            conv(1, 32, 3, 1, 1), res(32), res(32),
            conv(32, 64, 3, (3, 1), 1), res(64), res(64),
            conv(64, 128, 3, 3, 1), res(128), res(128),
            conv(128, 256, 3, (3, 2), 1), res(256),
            conv(256, 512, 3, 1, 0), conv(512, 512, 1, 1, 0),
        )
        # Input widths include the skip concatenated after the previous stage.
        self.face_decoder_blocks = nn.ModuleList([
            nn.Sequential(conv(512, 512, 1, 1, 0)),                             # ⊕ enc6 → 1024 @ 1²
            nn.Sequential(up(1024, 512, s=1, p=0, op=0), res(512)),             # ⊕ enc5 → 1024 @ 3²
            nn.Sequential(up(1024, 512), res(512), res(512)),                   # ⊕ enc4 → 768 @ 6²
            nn.Sequential(up(768, 384), res(384), res(384)),                    # ⊕ enc3 → 512 @ 12²
            nn.Sequential(up(512, 256), res(256), res(256)),                    # ⊕ enc2 → 320 @ 24²
            nn.Sequential(up(320, 128), res(128), res(128)),                    # ⊕ enc1 → 160 @ 48²
            nn.Sequential(up(160, 64), res(64), res(64)),                       # ⊕ enc0 → 80 @ 96²
        ])
        # The last conv has no norm and no ReLU; the sigmoid is applied in forward.
        self.output_block = nn.Sequential(conv(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0))

    def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        if mel.dim() == 5 and faces.dim() == 5:
            b, t = mel.shape[:2]
            if (faces.shape[0], faces.shape[2]) != (b, t):
                raise ValueError(f"mel {tuple(mel.shape)} and faces {tuple(faces.shape)} "
                                 "disagree on batch or time (expected [B,T,1,..] and [B,6,T,..])")
            out = self(mel.reshape(b * t, *mel.shape[2:]),
                       faces.transpose(1, 2).reshape(b * t, faces.shape[1], *faces.shape[3:]))
            return out.reshape(b, t, *out.shape[1:]).transpose(1, 2)
        self._check_inputs(mel, faces)

        skips = []
        x = faces
        for block in self.face_encoder_blocks:
            x = block(x)
            skips.append(x)
        x = self.audio_encoder(mel)
        for block in self.face_decoder_blocks:
            # The decoder output comes first in the concatenation, then the skip.
            x = torch.cat([block(x), skips.pop()], dim=1)
        return torch.sigmoid(self.output_block(x))

    def _check_inputs(self, mel: torch.Tensor, faces: torch.Tensor) -> None:
        cfg = self.config
        mel_shape = (1, cfg.mel_bands, cfg.mel_steps)
        face_shape = (6, cfg.img_size, cfg.img_size)
        if mel.dim() != 4 or tuple(mel.shape[1:]) != mel_shape:
            raise ValueError(f"mel must be [B,{','.join(map(str, mel_shape))}], got {tuple(mel.shape)}")
        if faces.dim() != 4 or tuple(faces.shape[1:]) != face_shape:
            raise ValueError(f"faces must be [B,{','.join(map(str, face_shape))}], "
                             f"got {tuple(faces.shape)}")
        if mel.shape[0] != faces.shape[0]:
            raise ValueError(f"batch sizes differ: mel {mel.shape[0]}, faces {faces.shape[0]}")


def wav2lip_keys_from_official(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """Our state dict from what ``torch.load`` returns for an official generator file.

    Two layouts exist: the training script's dict (``state_dict``, ``optimizer``,
    ``global_step``, ``global_epoch``; only ``state_dict`` matters) and a bare state dict.
    Key names come in two spellings: the released files carry DataParallel's ``module.``
    (``module.audio_encoder.0.conv_block.0.weight``), checkpoints from the current training
    script, which no longer wraps the model, do not. Like the official loader we remove every
    ``module.`` occurrence, so both spellings map onto our names.
    """
    if not isinstance(checkpoint, Mapping):
        raise WeightsError(f"not a Wav2Lip checkpoint: torch.load gave a {type(checkpoint).__name__}")
    if isinstance(checkpoint.get("state_dict"), Mapping):
        state = checkpoint["state_dict"]  # the training script's layout
    else:
        state = checkpoint  # a bare state dict
    ours: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"not a Wav2Lip checkpoint: entry {key!r} is a {type(value).__name__}, "
                               f"not a tensor (top-level keys: {sorted(map(str, checkpoint))[:6]})")
        name = key.replace(OFFICIAL_PREFIX, "")
        if name in ours:
            raise WeightsError(f"checkpoint holds {name!r} twice (with and without {OFFICIAL_PREFIX!r})")
        ours[name] = value
    return ours


def wav2lip_official_file(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Wrap our state dict the way the official training script saves it, ``module.`` prefix
    and all, so files we write (e.g. deterministic weights) exercise the released layout."""
    return {
        "state_dict": {OFFICIAL_PREFIX + k.removeprefix(OFFICIAL_PREFIX): v for k, v in state_dict.items()},
        "optimizer": {},
        "global_step": 0,
        "global_epoch": 0,
    }
