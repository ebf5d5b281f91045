"""What MuseTalk needs from one presenter frame, made once and reused.

Every output frame lipsync receives is a frame of the presenter's motion clip (ping-pong
looped), carrying that frame's identity (``FaceGeometry.clip_key`` and ``clip_frame``). Of
MuseTalk's work per output frame, the two VAE encodes (the crop with its lower half blanked,
and the reference crop: 2 x 273 GFLOPs) and the face parser's jaw mask (28 GFLOPs, plus the
blur) depend only on that frame's pixels and its box, never on the audio; only the UNet
(178), the decode (622) and the blend do. So the latents and the blend material are kept per
(motion frame, frame size, box) on this replica and reused for every other output frame made
from it, in this video and the presenter's next ones. Frames without a clip key are made
each time (services/common/presenter_cache.py keeps them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from talkinghead.services.lipsync.musetalk_blend import BlendMaterial

DEFAULT_MAX_BYTES = 256 << 20  # ~1,300 frames at a 400 px crop box: ten 125-frame clips


@dataclass(frozen=True)
class PresenterFrame:
    latents: torch.Tensor  # [8, 32, 32] scaled latents, masked first (on the engine's device)
    material: BlendMaterial

    @property
    def nbytes(self) -> int:
        return self.latents.numel() * self.latents.element_size() + self.material.mask.nbytes
