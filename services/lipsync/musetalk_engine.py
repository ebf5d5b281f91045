"""The second neural lipsync engine: MuseTalk 1.5 (Zhang et al., 2024, "MuseTalk: Real-Time
High Quality Lip Synchronization with Latent Space Inpainting") on a stream of frames.

It redraws the lower half of a 256x256 face crop in one pass (no denoising loop): both VAE
latents of the crop (lower half blanked, and whole) go through the UNet with 50 whisper-tiny
audio tokens per frame as cross-attention; the output latent is decoded and blended into the
frame below the face parser's jaw mask. Against Wav2Lip: a 256 px mouth instead of 96 px, and
weights published for commercial use (README, "Choosing a lipsync engine").

Per request, the whisper encoder runs once over the whole track (``musetalk_audio.py``);
frame ``i`` takes the window at ``i / fps`` for the real frame rate (upstream truncates it to
an integer). Per presenter (motion-clip) frame, the two encodes and the jaw mask are made once
and reused by every output frame made from it (``musetalk_presenter.py``); per output frame
only the UNet, the decode and the blend run, batched by ``--batch-size``. The face box comes
from the geometry the motion stage carries (``musetalk_face.box_from_geometry``); a frame
without geometry is searched with our Haar detector (memoised). The VAE's sampling noise is
seeded by the crop itself, so the same input always gives the same frames; the blend is
upstream's offline path (``--musetalk-blend realtime`` for its softer realtime seam).

Memory: the UNet is 850 M parameters (3.4 GB in float32, 1.7 GB with ``--half`` on cuda/mps),
the VAE 84 M, whisper-tiny's encoder 8 M, the parser 13 M. Peak resident memory measured on a
CPU in float32: 3.7 GiB loaded, 4.5 GiB syncing at batch size 1, 5.1 GiB at 4.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from talkinghead.services.common.audio import SAMPLE_RATE
from talkinghead.services.common.engine_contract import LipSyncEngine, NeuralEngine
from talkinghead.services.common.errors import InputError, NoFaceError, WeightsError
from talkinghead.services.common.face_detection import largest_face
from talkinghead.services.common.frames import FaceGeometry, VideoFrame
from talkinghead.services.common.presenter_cache import PresenterCache, presenter_key
from talkinghead.services.lipsync import musetalk_blend as mb
from talkinghead.services.lipsync import musetalk_face as mf
from talkinghead.services.lipsync.musetalk_presenter import DEFAULT_MAX_BYTES, PresenterFrame

if TYPE_CHECKING:
    from talkinghead.services.common.server import ServerSettings
    from talkinghead.services.lipsync.musetalk_audio import AudioWindows

log = logging.getLogger(__name__)

LATE_FRAME_SLACK_S = 0.5  # as Wav2Lip: frames past the audio by more are refused
MAX_DETECTION_MEMO = 64
BLENDS = {"offline": mb.BLUR_OFFLINE, "realtime": mb.BLUR_REALTIME}


def missing_extra() -> list[str]:
    import importlib.util

    return [m for m in ("diffusers", "transformers", "safetensors")
            if importlib.util.find_spec(m) is None]


class MuseTalkEngine(NeuralEngine, LipSyncEngine):
    name = "musetalk"

    def __init__(self, weights_dir: Path | None, device: str, batch_size: int = 8,
                 half: bool = False, presenter_cache_bytes: int = DEFAULT_MAX_BYTES,
                 blend: str = "offline", mask_mode: str = "jaw", integer_fps: bool = False):
        from talkinghead.services.common.checkpoints import file_fingerprint
        from talkinghead.services.lipsync import musetalk_weights as mw

        super().__init__(weights_dir, device, batch_size, half)
        if blend not in BLENDS:
            raise ValueError(f"unknown blend {blend!r} ({', '.join(BLENDS)})")
        if mask_mode not in ("jaw", "raw", "neck"):
            raise ValueError(f"unknown mask mode {mask_mode!r} (jaw, raw, neck)")
        for key in mw.REQUIRED:
            if not (self.weights_dir / mw.FILES[key]).is_file():
                raise WeightsError(f"missing weights file: {self.weights_dir / mw.FILES[key]}")
        if missing_extra():
            raise WeightsError("MuseTalk needs the optional extra: pip install "
                               f"'talkinghead[musetalk]' (missing: {', '.join(missing_extra())})")
        nets = mw.load_networks(self.weights_dir, self.dtype)
        self.unet = nets.unet.to(device)
        self.vae = nets.vae.to(device)
        self.whisper = nets.whisper_encoder.to(device)
        self.feature_extractor = nets.feature_extractor
        self.parser = nets.parser.to(device)  # float32: its argmax draws the mask's edge
        self.scaling = float(self.vae.config.scaling_factor)
        self.blur = BLENDS[blend]
        self.mask_mode = mask_mode
        self.integer_fps = integer_fps
        self.presenter = PresenterCache(presenter_cache_bytes)
        self._memo: dict[bytes, FaceGeometry | None] = {}
        from talkinghead.services.lipsync.musetalk_audio import positional_table

        self.positions = positional_table().to(device=device, dtype=self.dtype)
        variant = f"{blend}-{mask_mode}{'-intfps' if integer_fps else ''}"
        self.fingerprint = f"musetalk-{variant}-{file_fingerprint(nets.paths)}"
        log.info("MuseTalk 1.5 on %s (%s), blend %s, mask %s", device,
                 str(self.dtype).removeprefix("torch."), blend, mask_mode)

    @classmethod
    def from_settings(cls, settings: ServerSettings, device: str) -> MuseTalkEngine:
        """With lipsync's MuseTalk flags of ``talkinghead serve``."""
        options = settings.options
        mb_ = int(options.get("musetalk_cache_mb", DEFAULT_MAX_BYTES >> 20))
        return cls(settings.weights_dir, device, settings.batch_size, half=settings.half,
                   presenter_cache_bytes=mb_ << 20,
                   blend=str(options.get("musetalk_blend", "offline")),
                   mask_mode=str(options.get("musetalk_mask", "jaw")),
                   integer_fps=bool(options.get("musetalk_integer_fps", False)))

    @torch.inference_mode()
    def warmup(self) -> None:
        """One pass of every network at its real size (a 256x256 crop, 512 for the parser)."""
        crop = np.zeros((mf.CROP, mf.CROP, 3), np.uint8)
        latents = self._latents([crop])
        tokens = self.positions[None]
        self._faces(latents, tokens)
        self.parser(torch.zeros(1, 3, mb.PARSE_SIZE, mb.PARSE_SIZE, device=self.device), aux=False)
        from talkinghead.services.lipsync import musetalk_audio as ma

        ma.encoder_states(self.whisper, ma.input_features(self.feature_extractor,
                                                          np.zeros(SAMPLE_RATE, np.float32)),
                          self.device, self.dtype)

    # ---- faces ---------------------------------------------------------------------------

    def _geometry(self, frame: VideoFrame) -> FaceGeometry | None:
        if frame.face is not None:
            return frame.face
        key = hashlib.blake2b(frame.image.tobytes(), digest_size=16).digest()
        if key not in self._memo:
            if len(self._memo) >= MAX_DETECTION_MEMO:
                self._memo.clear()
            self._memo[key] = largest_face(frame.image)
        return self._memo[key]

    def face_box(self, frame: VideoFrame) -> tuple[int, int, int, int] | None:
        face = self._geometry(frame)
        return None if face is None else mf.box_from_geometry(face, frame.height, frame.width)

    # ---- the networks --------------------------------------------------------------------

    def _latents(self, crops: list[np.ndarray]) -> torch.Tensor:
        """[N, 8, 32, 32] for 256x256 RGB crops, noise seeded by each crop."""
        masked, reference = mf.vae_inputs(np.stack(crops))
        noise = torch.stack([mf.crop_noise(c) for c in crops])
        on = {"device": self.device, "dtype": self.dtype}
        return mf.latents(self.vae, masked.to(**on), reference.to(**on), noise[:, 0].to(**on),
                          noise[:, 1].to(**on), self.scaling)

    def _masks(self, frames: list[VideoFrame], boxes: list[tuple[int, int, int, int]]
               ) -> list[mb.BlendMaterial]:
        crop_boxes = [mb.crop_box(b) for b in boxes]
        crops = [mb.crop_image(f.image, c) for f, c in zip(frames, crop_boxes, strict=True)]
        logits = self.parser(mb.parser_input(crops).to(self.device), aux=False).out
        labels = logits.argmax(1).to(torch.uint8).cpu().numpy()
        return [mb.BlendMaterial(b, c, mb.prepare_mask(mb.labels_to_mask(lab, self.mask_mode), b, c,
                                                       self.blur))
                for b, c, lab in zip(boxes, crop_boxes, labels, strict=True)]

    def _faces(self, latents: torch.Tensor, tokens: torch.Tensor) -> np.ndarray:
        """UNet (timestep 0) and decode: uint8 RGB [N, 256, 256, 3]."""
        timestep = torch.zeros(latents.shape[0], dtype=torch.long, device=self.device)
        out = self.unet(latents, timestep, encoder_hidden_states=tokens).sample
        return mf.to_uint8_rgb(mf.decode_float(self.vae, out, self.scaling))

    # ---- the stream ----------------------------------------------------------------------

    def audio_windows(self, audio: np.ndarray, fps: float) -> AudioWindows:
        """The request's audio, encoded once: every frame's window is a slice of it."""
        from talkinghead.services.lipsync import musetalk_audio as ma

        with torch.inference_mode():
            states = ma.encoder_states(self.whisper, ma.input_features(self.feature_extractor, audio),
                                       self.device, self.dtype)
        return ma.AudioWindows.build(states, len(audio), fps, self.integer_fps)

    def sync(self, frames: Iterable[VideoFrame], audio: np.ndarray, fps: float,
             pass_through_faceless: bool = False) -> Iterator[VideoFrame]:
        if not fps > 0:
            raise InputError(f"fps must be positive, got {fps}")
        windows = self.audio_windows(np.asarray(audio, np.float32), fps)
        audio_seconds = len(audio) / SAMPLE_RATE
        ready: list[tuple[VideoFrame, tuple[int, int, int, int]]] = []
        iterator = iter(frames)
        for frame in iterator:
            if frame.index / fps > audio_seconds + LATE_FRAME_SLACK_S:
                raise InputError(
                    f"frame {frame.index} is at {frame.index / fps:.2f} s, past the end of the "
                    f"{audio_seconds:.2f} s audio: frame and audio lengths disagree")
            box = self.face_box(frame)
            if box is None:
                if pass_through_faceless:
                    yield from self._generate(ready, windows)
                    ready = []
                    yield frame
                    continue
                faceless = [frame.index] + [f.index for f in iterator if self.face_box(f) is None]
                raise NoFaceError(
                    f"no face found in frame(s) {_ranges(faceless)}; send face geometry, or "
                    "set pass_through_faceless to leave such frames unchanged", faceless)
            ready.append((frame, box))
            if len(ready) >= self.batch_size:
                yield from self._generate(ready, windows)
                ready = []
        yield from self._generate(ready, windows)

    @torch.inference_mode()
    def _generate(self, items: list[tuple[VideoFrame, tuple[int, int, int, int]]],
                  windows: AudioWindows) -> Iterator[VideoFrame]:
        if not items:
            return
        frames = [f for f, _ in items]
        boxes = [b for _, b in items]

        def make(js: list[int]) -> list[PresenterFrame]:
            crops = [mf.crop_face(frames[j].image, boxes[j]) for j in js]
            latents = self._latents(crops)
            materials = self._masks([frames[j] for j in js], [boxes[j] for j in js])
            return [PresenterFrame(lat, m) for lat, m in zip(latents, materials, strict=True)]

        # once per (motion-clip frame, box) on this replica (musetalk_presenter.py)
        presenter = self.presenter.entries([presenter_key(f, b) for f, b in items], make)
        latents = torch.stack([p.latents for p in presenter])
        tokens = windows.window([f.index for f in frames]).to(self.device, self.dtype) + self.positions
        faces = self._faces(latents, tokens)
        for frame, entry, face in zip(frames, presenter, faces, strict=True):
            resized = mf.resize_to_box(face, entry.material.box)
            yield VideoFrame(frame.index, mb.blend(frame.image, resized, entry.material), frame.face)


def _ranges(indices: list[int]) -> str:
    from talkinghead.services.lipsync.wav2lip_engine import _ranges as ranges

    return ranges(indices)
