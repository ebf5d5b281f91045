"""The neural lipsync engine: Wav2Lip (Prajwal et al., 2020) on a stream of frames.

Audio features are computed once per request: the mel spectrogram of the whole track and
one 16-column window per output frame (frame i shows the audio at i / fps; frames past
the last window reuse it, as the official tail rule does). Faces come from the geometry
the motion stage attached to each frame; a frame without geometry is searched with S3FD
(or, without its weights, our Haar detector). Boxes are padded and smoothed exactly as the
official inference does, then crops go through the generator in batches and the mouth
region is pasted back. Frames stream in and out: memory does not grow with the video.
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
from talkinghead.services.common.errors import InputError, NoFaceError
from talkinghead.services.common.face_detection import largest_face
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.common.presenter_cache import PresenterCache
from talkinghead.services.lipsync import face_window as fw
from talkinghead.services.lipsync.box_stream import StreamingBoxSmoother
from talkinghead.services.lipsync.face_inputs import DEFAULT_MAX_BYTES, crops_of, face_input_key
from talkinghead.services.lipsync.mel import mel_window_starts, melspectrogram

if TYPE_CHECKING:
    from talkinghead.services.common.server import ServerSettings

log = logging.getLogger(__name__)

# Frames may run this far past the end of the audio (rounding of the frame count); beyond
# it the lengths disagree and the request is refused.
LATE_FRAME_SLACK_S = 0.5
MAX_DETECTION_MEMO = 64
MIN_FACE_PIXELS = 8  # a padded, clamped box narrower than this is no face


class Wav2LipEngine(NeuralEngine, LipSyncEngine):
    name = "wav2lip"

    def __init__(self, weights_dir: Path | None, device: str, batch_size: int = 16,
                 variant: str = "auto", pads=fw.DEFAULT_PADS, half: bool = False,
                 face_input_cache_bytes: int = DEFAULT_MAX_BYTES):
        from talkinghead.services.common.checkpoints import file_fingerprint
        from talkinghead.services.lipsync import wav2lip_weights as ww

        super().__init__(weights_dir, device, batch_size, half)
        self.pads = tuple(pads)
        generator, path = ww.load_generator(self.weights_dir, variant)
        self.generator = generator.to(device=device, dtype=self.dtype)
        detector = ww.load_detector(self.weights_dir)
        self.detector = detector.to(device) if detector is not None else None
        self.fingerprint = f"wav2lip-{path.stem}-{file_fingerprint([path])}"
        self._memo: dict[bytes, tuple[int, int, int, int] | None] = {}
        self.face_inputs = PresenterCache(face_input_cache_bytes)
        log.info("Wav2Lip generator %s; face detection for frames without geometry: %s",
                 path.name, "S3FD" if self.detector is not None else "Haar (no s3fd.pth)")

    @classmethod
    def from_settings(cls, settings: ServerSettings, device: str) -> Wav2LipEngine:
        """With lipsync's flags of ``talkinghead serve`` (--face-input-cache-mb)."""
        mb = int(settings.options.get("face_input_cache_mb", DEFAULT_MAX_BYTES >> 20))
        return cls(settings.weights_dir, device, settings.batch_size, half=settings.half,
                   face_input_cache_bytes=mb << 20)

    @torch.inference_mode()
    def warmup(self) -> None:
        faces = torch.zeros(1, 6, 96, 96, device=self.device, dtype=self.dtype)
        mel = torch.zeros(1, 1, 80, 16, device=self.device, dtype=self.dtype)
        self.generator(mel, faces)
        if self.detector is not None:
            self._detect(np.zeros((64, 64, 3), np.uint8))

    # ---- faces -----------------------------------------------------------------------

    def _detect(self, image: np.ndarray) -> tuple[int, int, int, int] | None:
        """The face rectangle (x1, y1, x2, y2) in a frame without geometry (memoised, so a
        still photo repeated over a whole clip is searched once)."""
        key = hashlib.blake2b(image.tobytes(), digest_size=16).digest()
        if key not in self._memo:
            if len(self._memo) >= MAX_DETECTION_MEMO:
                self._memo.clear()
            if self.detector is not None:
                from talkinghead.services.lipsync.s3fd_detect import detect_faces

                self._memo[key] = detect_faces(self.detector, image, "rgb")[0]
            else:
                face = largest_face(image)
                self._memo[key] = None if face is None else tuple(int(v) for v in face.box)
        return self._memo[key]

    def _has_face(self, frame: VideoFrame) -> bool:
        rect = self.face_rect(frame)
        if rect is None:
            return False
        box = fw.pad_boxes(np.array([rect]), frame.height, frame.width, self.pads)[0]
        return min(box[2] - box[0], box[3] - box[1]) >= MIN_FACE_PIXELS

    def face_rect(self, frame: VideoFrame) -> tuple[int, int, int, int] | None:
        if frame.face is not None:
            return tuple(int(v) for v in frame.face.box)
        return self._detect(frame.image)

    # ---- the stream --------------------------------------------------------------------

    def sync(self, frames: Iterable[VideoFrame], audio: np.ndarray, fps: float,
             pass_through_faceless: bool = False) -> Iterator[VideoFrame]:
        if not fps > 0:
            raise InputError(f"fps must be positive, got {fps}")
        windows_mel = melspectrogram(audio)
        starts = mel_window_starts(windows_mel.shape[1], fps)
        audio_seconds = len(audio) / SAMPLE_RATE
        smoother: StreamingBoxSmoother[VideoFrame] = StreamingBoxSmoother()
        ready: list[tuple[VideoFrame, np.ndarray]] = []
        faceless: list[int] = []
        iterator = iter(frames)
        for frame in iterator:
            if frame.index / fps > audio_seconds + LATE_FRAME_SLACK_S:
                raise InputError(
                    f"frame {frame.index} is at {frame.index / fps:.2f} s, past the end of the "
                    f"{audio_seconds:.2f} s audio: frame and audio lengths disagree"
                )
            rect = self.face_rect(frame)
            box = None
            if rect is not None:
                box = fw.pad_boxes(np.array([rect]), frame.height, frame.width, self.pads)[0]
                if min(box[2] - box[0], box[3] - box[1]) < MIN_FACE_PIXELS:
                    box = None  # a box outside the frame, or a sliver: no usable face
            if box is None:
                if pass_through_faceless:
                    # keep order: what is waiting in the smoother goes first
                    ready.extend(smoother.finish())
                    yield from self._generate(ready, windows_mel, starts)
                    ready = []
                    yield frame
                    continue
                faceless.append(frame.index)
                faceless += [f.index for f in iterator if not self._has_face(f)]
                raise NoFaceError(
                    f"no face found in frame(s) {_ranges(faceless)}; send face geometry, or "
                    "set pass_through_faceless to leave such frames unchanged", faceless)
            ready.extend(smoother.push(frame, box))
            if len(ready) >= self.batch_size:
                yield from self._generate(ready, windows_mel, starts)
                ready = []
        ready.extend(smoother.finish())
        yield from self._generate(ready, windows_mel, starts)

    @torch.inference_mode()
    def _generate(self, items: list[tuple[VideoFrame, np.ndarray]], mel: np.ndarray,
                  starts: list[int]) -> Iterator[VideoFrame]:
        for batch in fw.batched(items, self.batch_size):
            frames = [f for f, _ in batch]
            coords = fw.crop_coords(np.stack([box for _, box in batch]))
            windows = [mel[:, s:s + 16] for s in
                       (starts[min(f.index, len(starts) - 1)] for f in frames)]

            def make(js: list[int], frames=frames, coords=coords) -> list[torch.Tensor]:
                crops = crops_of([frames[j] for j in js], coords[js])
                return list(fw.network_faces_from_rgb(crops).to(self.device, self.dtype))

            # once per (motion-clip frame, box) on this replica (face_inputs.py)
            faces = torch.stack(self.face_inputs.entries(
                [face_input_key(f, c) for f, c in zip(frames, coords, strict=True)], make))
            audio = fw.network_mel(windows).to(self.device, self.dtype)
            out = fw.network_output_to_uint8_rgb(self.generator(audio, faces).float().cpu())
            for (frame, _), patch, c in zip(batch, out, coords, strict=True):
                yield VideoFrame(frame.index, fw.paste_face(frame.image, patch, c), frame.face)


def _ranges(indices: list[int]) -> str:
    """[3, 4, 5, 9] → '3-5, 9'."""
    parts, start = [], None
    for i, value in enumerate(indices):
        if start is None:
            start = value
        if i + 1 == len(indices) or indices[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ", ".join(parts)
