"""The neural motion engine: LivePortrait image animation (Guo et al., 2024).

Per request, once: detect the face, cut the 256 px crop, compute the appearance feature
volume f_s = F(crop) and the source keypoints x_s from M(crop). Per template frame, in
batches: move the keypoints by the template's motion (relative to its first frame),
stitch, warp f_s with W, decode with G to 512 px, and paste the result back into the
photo. Frames carry the face geometry and crop transform, so later stages do not detect
the face again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from talkinghead.services.common.engine_contract import MotionEngine, NeuralEngine
from talkinghead.services.common.errors import InputError, NoFaceError
from talkinghead.services.common.face_detection import largest_face
from talkinghead.services.common.frames import FaceGeometry, VideoFrame
from talkinghead.services.motion.driving import drive_batch, prepare_source
from talkinghead.services.motion.face_crop import NETWORK_SIZE, FaceCrop, crop_for_face, paste_back
from talkinghead.services.motion.keypoints import (
    DrivingFrame,
    KeypointInfo,
    eye_open_ratios,
    lip_open_ratio,
    retargeting_delta,
)
from talkinghead.services.motion.options import MotionOptions, MotionReport
from talkinghead.services.motion.template import MotionTemplate

log = logging.getLogger(__name__)


def to_tensor(image: np.ndarray, device: str, dtype: torch.dtype) -> torch.Tensor:
    """uint8 HWC RGB → [1, 3, H, W] in 0..1."""
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    return t.to(device=device, dtype=dtype) / 255.0


def to_images(batch: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in 0..1 → uint8 [B, H, W, 3]."""
    return (batch.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def template_frames(template: MotionTemplate, index: slice, device: str) -> DrivingFrame:
    def grab(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a[index])).to(device=device, dtype=torch.float32)

    return DrivingFrame(R=grab(template.R), exp=grab(template.exp), scale=grab(template.scale),
                        t=grab(template.t))


class LivePortraitEngine(NeuralEngine, MotionEngine):
    name = "liveportrait"

    def __init__(self, weights_dir: Path | None, device: str, batch_size: int = 4,
                 half: bool = False):
        from talkinghead.services.common.grid_sampling import check_mps_grid_sample
        from talkinghead.services.motion.liveportrait_weights import load_networks

        super().__init__(weights_dir, device, batch_size, half)  # the keypoint maths stays fp32
        check_mps_grid_sample(device)  # on mps: native 3-D grid_sample, or a clear refusal
        self.nets = load_networks(self.weights_dir).to(device, self.dtype)
        self.fingerprint = f"liveportrait-{self.nets.fingerprint}"
        # The official crop (InsightFace + landmark ONNX models) when those files and
        # onnxruntime are there; otherwise our own detector's five points.
        from talkinghead.services.motion.onnx_face import OnnxFaceAnalyzer

        self.face_analyzer = OnnxFaceAnalyzer.from_weights_dir(self.weights_dir)
        if self.face_analyzer is not None:
            self.fingerprint += "-onnxcrop"
        log.info("LivePortrait source crop: %s", "InsightFace + landmark ONNX (official)"
                 if self.face_analyzer is not None else "Haar detector, five points (fallback)")

    @torch.inference_mode()
    def warmup(self) -> None:
        """One small pass through every network (they are fully convolutional; the dense
        motion hourglass pools five times, so 128 px is the smallest crop it takes)."""
        crop = np.full((128, 128, 3), 128, np.uint8)
        source = self._source(crop)
        self._render(source, source["x_s"], source["x_s"])

    def prepare(self, photo: np.ndarray) -> FaceGeometry:
        return self.locate(photo)[0]

    def locate(self, photo: np.ndarray) -> tuple[FaceGeometry, FaceCrop]:
        """The face and its 256 px crop: the official way when the ONNX models are there."""
        if self.face_analyzer is not None:
            official = self.face_analyzer.analyze(photo)
            if official is None:
                raise NoFaceError("no face found in the photo")
            return official.geometry, official.crop
        face = largest_face(photo)
        if face is None:
            raise NoFaceError("no face found in the photo")
        return face, crop_for_face(face, NETWORK_SIZE)

    def _source(self, crop: np.ndarray) -> dict:
        x = to_tensor(crop, self.device, self.dtype)
        feature = self.nets.appearance(x)
        info = KeypointInfo.from_heads(self.nets.motion(x).to(dtype=torch.float32))
        return {"f_s": feature, "info": info, "x_s": info.keypoints()}

    def _render(self, source: dict, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
        batch = x_d.shape[0]
        feature = source["f_s"].expand(batch, *source["f_s"].shape[1:])
        warped = self.nets.warping(feature, x_s.to(self.dtype), x_d.to(self.dtype))
        return self.nets.generator(warped.out)

    def _retargeting_ratios(self, photo: np.ndarray, template: MotionTemplate,
                            options: MotionOptions) -> dict[str, np.ndarray]:
        """Source openness ratios for the requested eye/lip retargeting, or InputError."""
        wanted = {"eye": options.eye_retargeting, "lip": options.lip_retargeting}
        if not any(wanted.values()):
            return {}
        if self.face_analyzer is None:
            raise InputError("eye/lip retargeting needs LivePortrait's landmark models "
                             "(insightface + landmark.onnx in the weights directory, and "
                             "onnxruntime)")
        official = self.face_analyzer.analyze(photo)
        if official is None:
            raise NoFaceError("no face found in the photo")
        ratios = {}
        if wanted["eye"]:
            if template.eye_ratio is None:
                raise InputError(f"template {template.name!r} carries no eye openness "
                                 "(c_d_eyes_lst): eye retargeting is not possible with it")
            ratios["eye"] = eye_open_ratios(official.landmarks_203)
        if wanted["lip"]:
            if template.lip_ratio is None:
                raise InputError(f"template {template.name!r} carries no lip openness "
                                 "(c_d_lip_lst): lip retargeting is not possible with it")
            ratios["lip"] = lip_open_ratio(official.landmarks_203)
        return ratios

    def _retarget(self, x_s: torch.Tensor, x_d: torch.Tensor, template: MotionTemplate,
                  index: slice, source_ratios: dict, relative: bool) -> torch.Tensor:
        """The official retargeting step: with relative motion the driving keypoints are
        replaced by x_s plus the eye/lip offsets; with absolute motion the offsets are added."""
        batch = x_d.shape[0]
        total = torch.zeros_like(x_d)
        for part, mlp, driving in (("eye", self.nets.eye, template.eye_ratio),
                                   ("lip", self.nets.lip, template.lip_ratio)):
            if part not in source_ratios:
                continue
            source = torch.as_tensor(source_ratios[part], dtype=torch.float32)
            # the official code feeds only the first driving value ([0][0]) per frame
            drive = torch.as_tensor(driving[index][:, :1], dtype=torch.float32)
            ratios = torch.cat([source.expand(batch, -1), drive], dim=1).to(self.device)
            total = total + retargeting_delta(x_s, ratios.to(self.dtype),
                                              lambda v, m=mlp: m(v).float())
        return (x_s + total) if relative else (x_d + total)

    def _source_lip_ratio(self, photo: np.ndarray, options: MotionOptions) -> float | None:
        """The photo's lip-open ratio from its 203 landmarks, for lip normalisation; None
        without the landmark models (nothing is guessed: the report says so)."""
        if not options.normalize_lip or self.face_analyzer is None:
            return None
        official = self.face_analyzer.analyze(photo)
        if official is None:
            raise NoFaceError("no face found in the photo")
        return float(lip_open_ratio(official.landmarks_203)[0])

    @torch.inference_mode()
    def animate(self, photo: np.ndarray, template: MotionTemplate, options: MotionOptions,
                report: MotionReport | None = None) -> Iterator[VideoFrame]:
        source_ratios = self._retargeting_ratios(photo, template, options)
        lip_ratio = self._source_lip_ratio(photo, options)
        face, crop = self.locate(photo)
        source = self._source(crop.cut(photo))
        first = template_frames(template, slice(0, 1), self.device)
        settings = options.driving()
        driving = prepare_source(source["info"], first, settings, lip_ratio=lip_ratio,
                                 lip_mlp=lambda v: self.nets.lip(v.to(self.dtype)).float(),
                                 retargeting=bool(source_ratios))
        if report is not None:
            report.motion_multiplier = driving.motion_multiplier
            report.lip_normalized = driving.lip_delta is not None
            report.notes.extend(driving.notes)
        for note in driving.notes:
            log.info("%s", note)
        geometry = FaceGeometry(box=face.box, landmarks=face.landmarks,
                                crop_transform=crop.matrix.astype(np.float32), crop_size=crop.size)
        for start in range(0, template.n_frames, self.batch_size):
            stop = min(start + self.batch_size, template.n_frames)
            frames = template_frames(template, slice(start, stop), self.device)
            if options.expression_multiplier != 1.0:
                frames.exp = first.exp + (frames.exp - first.exp) * options.expression_multiplier
            retarget = None
            if source_ratios:
                def retarget(x_s, x_d, index=slice(start, stop)):
                    return self._retarget(x_s, x_d, template, index, source_ratios,
                                          options.relative_motion)
            x_d = drive_batch(driving, frames, first, settings,
                              self._stitching if options.stitching else None, retarget)
            x_s_batch = driving.x_s.expand(x_d.shape[0], -1, -1)
            images = to_images(self._render(source, x_s_batch, x_d))
            for offset, image in enumerate(images):
                yield VideoFrame(start + offset, paste_back(photo, image, crop), geometry)

    def _stitching(self, x: torch.Tensor) -> torch.Tensor:
        return self.nets.stitching(x.to(self.dtype)).float()
