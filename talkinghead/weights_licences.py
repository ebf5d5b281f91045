"""The licence of each weight file, and of its upstream code, as their publishers state them.

What ``talkinghead weights list`` prints beside each file (README "Model licences" quotes the
statements in full). Each entry says what the publisher of the file and of the code it was
released with state, and where; where a publisher states nothing for the file, it says so.
Read from the publishers' repositories (commits named in README) and model pages.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Licence:
    weights: str  # what the publisher states for the file
    code: str  # what the publisher states for the code the file was released with
    source: str  # where the statements are published

    def text(self) -> str:
        return f"weights: {self.weights}; code: {self.code} ({self.source})"


LIVEPORTRAIT = Licence(
    weights="MIT (model card of huggingface.co/KwaiVGI/LivePortrait)",
    code="MIT",
    source="https://github.com/KwaiVGI/LivePortrait/blob/main/LICENSE",
)
INSIGHTFACE = Licence(
    weights="non-commercial research purposes only (InsightFace; restated in LivePortrait's "
            "LICENSE)",
    code="MIT",
    source="https://github.com/deepinsight/insightface#license",
)
WAV2LIP = Licence(
    weights="personal/research/non-commercial purposes only; commercial requests to the "
            "authors (no LICENSE file)",
    code="the same statement (README, License and Citation)",
    source="https://github.com/Rudrabha/Wav2Lip#license-and-citation",
)
S3FD = Licence(
    weights="none stated (downloaded from adrianbulat.com, face-alignment's author; S3FD's "
            "authors, sfzhang15/SFD, state none)",
    code="BSD-3-Clause (face-alignment, whose detector code Wav2Lip took)",
    source="https://github.com/1adrianb/face-alignment/blob/master/LICENSE",
)
GFPGAN = Licence(
    weights="no separate statement (release assets of TencentARC/GFPGAN)",
    code="Apache-2.0 except third-party components: StyleGAN2 (stylegan2-pytorch MIT, the "
         "official NVIDIA StyleGAN2 under the Nvidia Source Code License-NC, "
         "non-commercial) and DFDNet (CC BY-NC-SA 4.0)",
    source="https://github.com/TencentARC/GFPGAN/blob/master/LICENSE",
)
RETINAFACE = Licence(
    weights="no separate statement (release asset of xinntao/facexlib)",
    code="MIT (facexlib; its source Pytorch_Retinaface: MIT)",
    source="https://github.com/xinntao/facexlib/blob/master/README.md",
)
PARSENET = Licence(
    weights="no separate statement (release asset of xinntao/facexlib)",
    code="MIT (facexlib); its ParseNet is 'Modified from' PSFRGAN: CC BY-NC-SA 4.0",
    source="https://github.com/chaofengc/PSFRGAN/blob/master/LICENSE",
)

MUSETALK = Licence(
    weights="\"The trained model are available for any purpose, even commercially\" (MuseTalk "
            "README); the model card's licence field names creativeml-openrail-m",
    code="MIT (\"no limitation for both academic and commercial usage\")",
    source="https://github.com/TMElyralab/MuseTalk#disclaimerlicense ; "
           "https://huggingface.co/TMElyralab/MuseTalk",
)
SD_VAE = Licence(
    weights="MIT (model card of huggingface.co/stabilityai/sd-vae-ft-mse)",
    code="Apache-2.0 (diffusers, which defines AutoencoderKL)",
    source="https://huggingface.co/stabilityai/sd-vae-ft-mse",
)
WHISPER = Licence(
    weights="Apache-2.0 (model card of huggingface.co/openai/whisper-tiny)",
    code="MIT (openai/whisper); transformers: Apache-2.0",
    source="https://huggingface.co/openai/whisper-tiny ; https://github.com/openai/whisper",
)
BISENET = Licence(
    weights="none stated (79999_iter.pth is shared through a Google Drive link by "
            "face-parsing.PyTorch and MuseTalk's download script)",
    code="MIT (face-parsing.PyTorch, as facexlib's README lists it)",
    source="https://github.com/zllrunning/face-parsing.PyTorch",
)
RESNET18 = Licence(
    weights="no separate statement (torchvision's ImageNet release; only checked, its values "
            "are replaced by the parser's)",
    code="BSD-3-Clause (torchvision)",
    source="https://github.com/pytorch/vision/blob/main/LICENSE",
)

# Path inside the weights directory -> licence.
BY_FILE: dict[str, Licence] = {
    "liveportrait/base_models/appearance_feature_extractor.pth": LIVEPORTRAIT,
    "liveportrait/base_models/motion_extractor.pth": LIVEPORTRAIT,
    "liveportrait/base_models/warping_module.pth": LIVEPORTRAIT,
    "liveportrait/base_models/spade_generator.pth": LIVEPORTRAIT,
    "liveportrait/retargeting_models/stitching_retargeting_module.pth": LIVEPORTRAIT,
    "liveportrait/landmark.onnx": LIVEPORTRAIT,
    "insightface/models/buffalo_l/det_10g.onnx": INSIGHTFACE,
    "insightface/models/buffalo_l/2d106det.onnx": INSIGHTFACE,
    "wav2lip/checkpoints/wav2lip_gan.pth": WAV2LIP,
    "wav2lip/checkpoints/wav2lip.pth": WAV2LIP,
    "wav2lip/face_detection/detection/sfd/s3fd.pth": S3FD,
    "gfpgan/GFPGANv1.4.pth": GFPGAN,
    "gfpgan/GFPGANv1.3.pth": GFPGAN,
    "gfpgan/weights/detection_Resnet50_Final.pth": RETINAFACE,
    "gfpgan/weights/parsing_parsenet.pth": PARSENET,
    "musetalk/musetalkV15/unet.pth": MUSETALK,
    "musetalk/musetalkV15/musetalk.json": MUSETALK,
    "musetalk/sd-vae/config.json": SD_VAE,
    "musetalk/sd-vae/diffusion_pytorch_model.safetensors": SD_VAE,
    "musetalk/sd-vae/diffusion_pytorch_model.bin": SD_VAE,
    "musetalk/whisper/config.json": WHISPER,
    "musetalk/whisper/model.safetensors": WHISPER,
    "musetalk/whisper/pytorch_model.bin": WHISPER,
    "musetalk/whisper/preprocessor_config.json": WHISPER,
    "musetalk/face-parse-bisent/79999_iter.pth": BISENET,
    "musetalk/face-parse-bisent/resnet18-5c106cde.pth": RESNET18,
}
