"""MuseTalk 1.5's files: where they live, and loading them into their networks.

Laid out like the official download (upstream's ``models/`` folder, here ``musetalk/`` in
the weights directory):

    musetalk/musetalkV15/unet.pth                  the UNet's state dict (850 M parameters)
    musetalk/musetalkV15/musetalk.json             its UNet2DConditionModel config
    musetalk/sd-vae/config.json                    sd-vae-ft-mse (AutoencoderKL)
    musetalk/sd-vae/diffusion_pytorch_model.safetensors   (or .bin)
    musetalk/whisper/config.json                   whisper-tiny (WhisperModel)
    musetalk/whisper/model.safetensors             (or pytorch_model.bin)
    musetalk/whisper/preprocessor_config.json      its log-mel feature extractor
    musetalk/face-parse-bisent/79999_iter.pth      BiSeNet face parser (the jaw mask)
    musetalk/face-parse-bisent/resnet18-5c106cde.pth   its ImageNet backbone (checked only)

Every file loads strictly: pickles with ``torch.load(weights_only=True)``, the Hugging Face
folders' ``.safetensors`` with safetensors. Configs are read from the folder (the shipped
copies in ``networks/musetalk.py`` are used only to write deterministic files).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from talkinghead.services.common.checkpoints import read_checkpoint
from talkinghead.services.common.deterministic_weights import deterministic_array
from talkinghead.services.common.errors import WeightsError

ROOT = "musetalk"
FILES = {
    "unet": f"{ROOT}/musetalkV15/unet.pth",
    "unet_config": f"{ROOT}/musetalkV15/musetalk.json",
    "vae_config": f"{ROOT}/sd-vae/config.json",
    "vae": f"{ROOT}/sd-vae/diffusion_pytorch_model.safetensors",
    "vae_bin": f"{ROOT}/sd-vae/diffusion_pytorch_model.bin",
    "whisper_config": f"{ROOT}/whisper/config.json",
    "whisper": f"{ROOT}/whisper/model.safetensors",
    "whisper_bin": f"{ROOT}/whisper/pytorch_model.bin",
    "whisper_preprocessor": f"{ROOT}/whisper/preprocessor_config.json",
    "parser": f"{ROOT}/face-parse-bisent/79999_iter.pth",
    "parser_backbone": f"{ROOT}/face-parse-bisent/resnet18-5c106cde.pth",
}
DESCRIPTIONS = {
    "unet": "MuseTalk 1.5 UNet (850 M parameters, 3.4 GB in float32)",
    "unet_config": "the UNet's config",
    "vae_config": "sd-vae-ft-mse config",
    "vae": "sd-vae-ft-mse weights (this or the .bin)",
    "vae_bin": "sd-vae-ft-mse weights (this or the .safetensors)",
    "whisper_config": "whisper-tiny config",
    "whisper": "whisper-tiny weights (this or pytorch_model.bin)",
    "whisper_bin": "whisper-tiny weights (this or model.safetensors)",
    "whisper_preprocessor": "whisper-tiny log-mel feature extractor settings",
    "parser": "BiSeNet face parser, for the jaw mask",
    "parser_backbone": "the parser's ResNet-18 backbone (upstream loads it first; checked only)",
}
REQUIRED = ("unet", "unet_config", "vae_config", "whisper_config", "whisper_preprocessor",
            "parser")


@dataclass
class MuseTalkNetworks:
    unet: torch.nn.Module
    vae: torch.nn.Module
    whisper_encoder: torch.nn.Module
    feature_extractor: Any
    parser: torch.nn.Module
    paths: list[Path]  # every file read (for the fingerprint)


def _json(path: Path) -> dict:
    if not path.is_file():
        raise WeightsError(f"missing weights file: {path}")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise WeightsError(f"cannot read {path}: {exc}") from exc


def _tensors(weights_dir: Path, key: str, alternative: str) -> tuple[dict, Path]:
    """The state dict of a Hugging Face folder: ``.safetensors`` if present, else the pickle."""
    preferred, fallback = weights_dir / FILES[key], weights_dir / FILES[alternative]
    if preferred.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(preferred)), preferred
        except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
            raise WeightsError(f"cannot read weights file {preferred}: {exc}") from exc
    if fallback.is_file():
        return read_checkpoint(fallback), fallback
    raise WeightsError(f"missing weights file: {preferred} (or {fallback.name})")


def load_unet(weights_dir: Path, dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, list[Path]]:
    from talkinghead.services.lipsync.networks import musetalk as nets

    weights_dir = Path(weights_dir)
    config_path, path = weights_dir / FILES["unet_config"], weights_dir / FILES["unet"]
    unet = nets.build_unet(_json(config_path))
    state = nets.unet_keys_from_official(read_checkpoint(path))
    return nets.load_into(unet, state, str(path), dtype), [config_path, path]


def load_vae(weights_dir: Path, dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, list[Path]]:
    from talkinghead.services.lipsync.networks import musetalk as nets

    weights_dir = Path(weights_dir)
    config_path = weights_dir / FILES["vae_config"]
    vae = nets.build_vae(_json(config_path))
    state, path = _tensors(weights_dir, "vae", "vae_bin")
    return nets.load_into(vae, nets.vae_keys_from_official(state), str(path), dtype), [config_path, path]


def load_whisper(weights_dir: Path, dtype: torch.dtype = torch.float32):
    """(encoder, feature extractor, paths): WhisperModel loaded strictly, its encoder kept."""
    from transformers import WhisperFeatureExtractor

    from talkinghead.services.lipsync.networks import musetalk as nets

    weights_dir = Path(weights_dir)
    config_path = weights_dir / FILES["whisper_config"]
    pre_path = weights_dir / FILES["whisper_preprocessor"]
    model = nets.build_whisper(_json(config_path))
    state, path = _tensors(weights_dir, "whisper", "whisper_bin")
    model = nets.load_into(model, nets.whisper_keys_from_official(state), str(path), dtype)
    try:
        extractor = WhisperFeatureExtractor.from_dict(_json(pre_path))
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"cannot use {pre_path}: {exc}") from exc
    return model.encoder, extractor, [config_path, path, pre_path]


def load_parser(weights_dir: Path) -> tuple[torch.nn.Module, list[Path]]:
    from talkinghead.services.lipsync.networks.bisenet import load_bisenet

    weights_dir = Path(weights_dir)
    path, backbone = weights_dir / FILES["parser"], weights_dir / FILES["parser_backbone"]
    net = load_bisenet(path, backbone if backbone.is_file() else None)
    return net, [path]


def load_networks(weights_dir: Path, dtype: torch.dtype = torch.float32) -> MuseTalkNetworks:
    """Every network, strictly; WeightsError names the first missing or mismatching file."""
    weights_dir = Path(weights_dir)
    for key in REQUIRED:
        if not (weights_dir / FILES[key]).is_file():
            raise WeightsError(f"missing weights file: {weights_dir / FILES[key]}")
    parser, p_paths = load_parser(weights_dir)
    encoder, extractor, w_paths = load_whisper(weights_dir, dtype)
    vae, v_paths = load_vae(weights_dir, dtype)
    unet, u_paths = load_unet(weights_dir, dtype)
    return MuseTalkNetworks(unet, vae, encoder, extractor, parser,
                            p_paths + w_paths + v_paths + u_paths)


# ---- deterministic files (reference packs, benchmarks, end-to-end tests) -------------------

def _deterministic(names_shapes, salt: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """The reference procedure's value for each tensor, its seed taken from the name the
    pack's manifest lists (``prefix`` + our name)."""
    return {name: torch.from_numpy(deterministic_array(prefix + name, tuple(shape), salt))
            for name, shape in names_shapes}


def _shapes(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(n, tuple(t.shape)) for n, t in module.state_dict().items()]


def write_deterministic_checkpoints(weights_dir: Path, salt: str,
                                    parts: tuple[str, ...] = ("parser", "whisper", "vae", "unet"),
                                    ) -> list[Path]:
    """The official layout filled with the reference pack's deterministic weights: the
    tensors the manifests list (their names, shapes and the salt give every value), in the
    files' own wrapping (whisper's ``model.`` prefix, the parser's backbone file)."""
    from talkinghead.services.lipsync.networks import musetalk as nets
    from talkinghead.services.lipsync.networks.bisenet import BiSeNet

    weights_dir = Path(weights_dir)
    written: list[Path] = []

    def out(key: str) -> Path:
        path = weights_dir / FILES[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        written.append(path)
        return path

    def write_json(key: str, content: dict) -> None:
        out(key).write_text(json.dumps(content, indent=2) + "\n")

    if "parser" in parts:
        net = BiSeNet()
        torch.save(_deterministic(_shapes(net), salt), out("parser"))
        backbone = _deterministic(_shapes(net.cp.resnet), salt)
        backbone["fc.weight"] = torch.from_numpy(deterministic_array("fc.weight", (1000, 512), salt))
        backbone["fc.bias"] = torch.from_numpy(deterministic_array("fc.bias", (1000,), salt))
        torch.save(backbone, out("parser_backbone"))
    if "whisper" in parts:
        from safetensors.torch import save_file
        from transformers import WhisperFeatureExtractor

        config = nets.whisper_config()
        model = nets.build_whisper()
        state = {f"model.{k}": v for k, v in _deterministic(_shapes(model), salt).items()}
        state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"].clone()
        save_file(state, str(out("whisper")))
        write_json("whisper_config", {"architectures": ["WhisperForConditionalGeneration"],
                                      **config.to_diff_dict()})
        write_json("whisper_preprocessor", json.loads(WhisperFeatureExtractor().to_json_string()))
    if "vae" in parts:
        from safetensors.torch import save_file

        save_file(_deterministic(_shapes(nets.build_vae()), salt), str(out("vae")))
        write_json("vae_config", nets.VAE_CONFIG)
    if "unet" in parts:
        state = _deterministic(_shapes(nets.build_unet()), salt)
        torch.save(state, out("unet"))
        del state
        write_json("unet_config", nets.UNET_CONFIG)
    return written
