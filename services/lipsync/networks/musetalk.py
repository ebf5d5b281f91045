"""MuseTalk 1.5's three published networks, as the classes this field runs them with.

* the UNet: diffusers' ``UNet2DConditionModel`` in Stable Diffusion 1.x's layout with 8 input
  channels (masked and reference latents) and cross-attention width 384 (whisper-tiny's),
  built from ``musetalk.json``; ``unet.pth`` is its plain state dict;
* the VAE: Stable Diffusion's ``sd-vae-ft-mse`` ``AutoencoderKL`` (Rombach et al., CVPR 2022,
  "High-Resolution Image Synthesis with Latent Diffusion Models"), built from its
  ``config.json``;
* the audio encoder: whisper-tiny's encoder, from transformers' ``WhisperModel``.

These are library classes, not our own modules: their definitions are what the checkpoints
were trained with and what the field uses, so the job here is only to build each from its
config without random initialisation (on the meta device), map the file's names, and load
strictly (:func:`load_into`). Only the face parser is our own module (``bisenet.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from talkinghead.services.common.checkpoints import first_mismatch
from talkinghead.services.common.errors import WeightsError

# musetalk.json of TMElyralab/MuseTalk (musetalkV15): the model hub's file, not in git.
UNET_CONFIG: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.6.0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                         "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                       "CrossAttnUpBlock2D"],
}
# config.json of stabilityai/sd-vae-ft-mse.
VAE_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.4.2",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
VAE_SCALING = 0.18215  # sd-vae's latent scaling (the config's default scaling_factor)

# Names an older sd-vae file may carry for the mid-block attention (diffusers renames on load).
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def build_unet(config: Mapping[str, Any] | None = None) -> nn.Module:
    """The UNet, parameters on the meta device (filled by :func:`load_into`)."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel.from_config(dict(config or UNET_CONFIG))


def build_vae(config: Mapping[str, Any] | None = None) -> nn.Module:
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        return AutoencoderKL.from_config(dict(config or VAE_CONFIG))


def whisper_config(config: Mapping[str, Any] | None = None):
    """whisper-tiny's config (transformers' WhisperConfig defaults are whisper-tiny's)."""
    from transformers import WhisperConfig

    return WhisperConfig.from_dict(dict(config or {}))


def build_whisper(config: Mapping[str, Any] | None = None) -> nn.Module:
    from transformers import WhisperModel

    with torch.device("meta"):
        return WhisperModel(whisper_config(config))


def unet_keys_from_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``unet.pth`` is UNet2DConditionModel's own state dict: the identity (a ``module.``
    prefix, from a DataParallel re-save, is stripped)."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def vae_keys_from_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """sd-vae's file → current diffusers names: the mid-block attention's legacy
    ``query/key/value/proj_attn`` become ``to_q/to_k/to_v/to_out.0`` (1x1-conv shaped
    weights, as the oldest files store them, become linear ones)."""
    out = {}
    for name, tensor in state.items():
        head, _, leaf = name.rpartition(".")
        parent, _, part = head.rpartition(".")
        if ".attentions." in name and part in _LEGACY_ATTENTION:
            name = f"{parent}.{_LEGACY_ATTENTION[part]}.{leaf}"
            if tensor.ndim == 4:
                tensor = tensor[:, :, 0, 0]
        out[name] = tensor
    return out


def whisper_keys_from_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """whisper-tiny's file (saved from WhisperForConditionalGeneration) → WhisperModel: the
    ``model.`` prefix removed and the output projection ``proj_out.weight`` (tied to the
    decoder's token embedding, not part of WhisperModel) dropped."""
    return {k.removeprefix("model."): v for k, v in state.items() if k != "proj_out.weight"}


def load_into(module: nn.Module, state: Mapping[str, torch.Tensor], source: str,
              dtype: torch.dtype = torch.float32) -> nn.Module:
    """Strict load into a meta-device module by assignment (no second copy of 3.4 GB), then
    cast to ``dtype``; WeightsError names the file and the first tensor that differs."""
    problem = first_mismatch(module, state)
    if problem:
        raise WeightsError(f"{source}: {problem}")
    module.load_state_dict(dict(state), strict=True, assign=True)
    return module.to(dtype).eval().requires_grad_(False)
