"""The neural restore engine: GFPGAN v1.3/v1.4 (Wang et al., 2021), batched over frames.

For every face in a chunk of frames: five landmarks from the frame's geometry (the motion
stage's) or, without it, RetinaFace; alignment to the FFHQ template; all crops of the chunk
through the network in one batch; then the official paste-back with the face parser's soft
mask (or facexlib's square mask when the parser's weights are absent). The pipeline
differs from ``GFPGANer.enhance`` only where it must: frames are restored in batches rather
than one by one, faces come from the geometry instead of a detector per frame, and
``weight`` blends the restored face with the aligned input (v1.3/v1.4 themselves ignore it).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from talkinghead.services.common.engine_contract import NeuralEngine, RestoreEngine
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.restore import face_align as fa
from talkinghead.services.restore import paste_masks as pm

if TYPE_CHECKING:
    from talkinghead.services.common.server import ServerSettings

log = logging.getLogger(__name__)

EYE_DISTANCE_MIN_PX = 5.0  # the official helper skips faces whose eyes are closer
PASTE_MASKS = ("auto", "presenter", "parse", "square")


class GFPGANEngine(NeuralEngine, RestoreEngine):
    name = "gfpgan"

    def __init__(self, weights_dir: Path | None, device: str, batch_size: int = 4,
                 half: bool = False, paste_mask: str = "auto", channels_last: bool = False,
                 bf16_cpu: bool = False, compile_network: bool | str = "auto",
                 mask_cache_bytes: int = pm.DEFAULT_MAX_BYTES, device_paste: bool | None = None):
        from talkinghead.services.common.checkpoints import file_fingerprint
        from talkinghead.services.common.errors import WeightsError
        from talkinghead.services.restore import gfpgan_weights as gw

        super().__init__(weights_dir, device, batch_size, half)
        weights_dir = self.weights_dir  # a Path from here on
        # "parse": the official soft mask (the face parser, ~470 GFLOPs per face, more than
        # GFPGAN itself) of every restored face; "presenter": that mask made once per
        # motion-clip frame and reused (paste_masks.py); "square": facexlib's geometric
        # mask, nearly free; "auto": presenter when the parser's weights are there, else
        # square (logged). bench/restore.py measures them.
        if paste_mask not in PASTE_MASKS:
            raise ValueError(f"paste_mask must be one of {', '.join(PASTE_MASKS)}, "
                             f"not {paste_mask!r}")
        parser_file = weights_dir / gw.FILES["parsenet"]
        if paste_mask in ("parse", "presenter") and not parser_file.is_file():
            # Asked for the official mask: a square one instead would give other pictures
            # (and other timings) without a word, so refuse before loading anything.
            raise WeightsError(
                f"paste mask {paste_mask!r} needs the face parser: missing weights file {parser_file} "
                f"(the file GFPGANer downloads, https://github.com/xinntao/facexlib/releases/"
                f"download/v0.2.2/parsing_parsenet.pth; `talkinghead weights list` shows the "
                f"layout), or use --paste-mask square or auto")
        restorer, path = gw.load_restorer(weights_dir)
        self.restorer = restorer.to(device=device, dtype=self.dtype)
        detector = gw.load_detector(weights_dir)
        self.detector = detector.to(device) if detector is not None else None
        parser = gw.load_parser(weights_dir)
        self.parser = parser.to(device) if parser is not None else None
        self.use_parser = self.parser is not None and paste_mask != "square"
        self.paste_mask = ("square" if not self.use_parser
                           else "presenter" if paste_mask == "auto" else paste_mask)
        self.mask_cache = (pm.PasteMaskCache(mask_cache_bytes)
                           if self.paste_mask == "presenter" else None)
        # Measured on this CPU (BENCHMARKS.md): channels_last gives no gain (within 3e-5 of
        # the reference, ~5 % slower uncontended), so it is off; bf16 autocast is ~1.7x
        # faster but up to 0.30 (35 counts) off the reference, so opt-in; torch.compile:
        # see compile_mode.
        if channels_last:
            to_channels_last(self.restorer)
        self.channels_last = channels_last
        self.bf16_cpu = bf16_cpu and device == "cpu"
        self.eager_restorer = self.restorer
        self.compile_seconds = 0.0  # measured at warm-up
        self.compiled = compile_mode(compile_network, device)
        if self.compiled:  # compiled at warm-up (the first batch), about a minute on a CPU
            self.restorer = torch.compile(self.restorer, dynamic=False)
        # The per-frame work around the network (crop, conversions, paste-back) as torch
        # ops on the device (device_paste.py, bit-identical to the host path on cpu and
        # cuda) on cuda and mps; on a CPU the host path (numpy/OpenCV) stays: measured no
        # faster there, and much slower when the cores are shared (torch's thread pool).
        # The presenter cache then keeps each mask on the device, in face coordinates.
        self.device_paste = (torch.device(device).type != "cpu"
                             if device_paste is None else device_paste)
        self.fingerprint = f"gfpgan-{path.stem}-{file_fingerprint([path])}"
        mask = ("face parser, once per motion-clip frame (presenter)"
                if self.paste_mask == "presenter" else
                "face parser, every frame (parse)" if self.use_parser
                else "square (asked)" if paste_mask == "square"
                else f"square (no face parser file {parser_file})")
        log.info("GFPGAN %s; detector %s; paste mask %s", path.name,
                 "RetinaFace" if self.detector is not None else "Haar (no RetinaFace file)", mask)

    @classmethod
    def from_settings(cls, settings: ServerSettings, device: str) -> GFPGANEngine:
        """With the restore flags of ``talkinghead serve`` (--paste-mask, --bf16, --compile)."""
        options = settings.options
        return cls(settings.weights_dir, device, settings.batch_size, half=settings.half,
                   paste_mask=options["paste_mask"], bf16_cpu=options["bf16"],
                   compile_network=options["compile"] or "auto",
                   mask_cache_bytes=int(options.get("paste_mask_cache_mb", 1024)) << 20)

    @torch.inference_mode()
    def warmup(self) -> None:
        """One batch through the network; a compiled network is compiled here, before the
        replica says SERVING. A compile that fails (no C++ compiler, say) is logged and the
        replica serves the eager network: slower, the same frames."""
        x = torch.zeros(self.batch_size if self.compiled else 1, 3, 512, 512,
                        device=self.device, dtype=self.dtype)
        if not self.compiled:
            self.restorer(x)
            return
        start = time.perf_counter()
        try:
            self.run_network(x)
        except Exception as err:  # inductor's errors have no common base class
            log.warning("torch.compile of GFPGAN failed, serving the eager network: %s", err)
            self.restorer, self.compiled = self.eager_restorer, False
            return
        self.compile_seconds = time.perf_counter() - start
        log.info("GFPGAN compiled in %.1f s", self.compile_seconds)

    # ---- faces -------------------------------------------------------------------------

    def landmarks_of(self, frame: VideoFrame, only_center_face: bool) -> list[np.ndarray]:
        """Five-point landmarks of the faces to restore in ``frame``."""
        if frame.face is not None and np.any(frame.face.landmarks):
            return [np.asarray(frame.face.landmarks, np.float64).reshape(5, 2)]
        if self.detector is not None:
            from talkinghead.services.restore.retinaface_detect import detect

            dets = detect(self.detector, frame.image, "rgb")
            faces = [(d[:4], d[5:15].reshape(5, 2).astype(np.float64)) for d in dets]
        else:
            from talkinghead.services.common.face_detection import detect_faces

            faces = [(np.array(f.box), np.asarray(f.landmarks, np.float64))
                     for f in detect_faces(frame.image)]
        faces = [(box, lm) for box, lm in faces
                 if np.linalg.norm(lm[0] - lm[1]) >= EYE_DISTANCE_MIN_PX]
        if only_center_face and faces:
            cx, cy = frame.width / 2, frame.height / 2
            faces = [min(faces, key=lambda f: np.hypot((f[0][0] + f[0][2]) / 2 - cx,
                                                       (f[0][1] + f[0][3]) / 2 - cy))]
        return [lm for _, lm in faces]

    def run_network(self, x: torch.Tensor) -> torch.Tensor:
        """The restorer on a batch of aligned faces, with the configured speed options. A
        compiled network always sees the batch size it was compiled for (a short batch is
        padded), so a chunk's last batch does not compile it again."""
        if self.compiled and x.shape[0] < self.batch_size:
            pad = x.new_zeros((self.batch_size - x.shape[0], *x.shape[1:]))
            return self.run_network(torch.cat([x, pad]))[:x.shape[0]]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.bf16_cpu:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.restorer(x).image
        return self.restorer(x).image

    # ---- a chunk of frames -------------------------------------------------------------

    @torch.inference_mode()
    def restore(self, frames: list[VideoFrame], weight: float = 0.5,
                only_center_face: bool = False) -> list[VideoFrame]:
        if self.device_paste:
            return self.restore_on_device(frames, weight, only_center_face)
        return self.restore_on_host(frames, weight, only_center_face)

    @torch.inference_mode()
    def restore_on_host(self, frames: list[VideoFrame], weight: float = 0.5,
                        only_center_face: bool = False) -> list[VideoFrame]:
        """The per-frame work in numpy/OpenCV on the host, the network on the device."""
        from talkinghead.services.restore.face_tensors import face_to_input, output_to_face

        jobs = []  # (frame position, alignment matrix, aligned crop)
        job_landmarks = []
        for pos, frame in enumerate(frames):
            for landmarks in self.landmarks_of(frame, only_center_face):
                matrix = fa.alignment_matrix(landmarks)
                job_landmarks.append(landmarks)
                jobs.append((pos, matrix, fa.warp_face(frame.image, matrix, "rgb")))
        restored_faces: list[np.ndarray] = []
        for start in range(0, len(jobs), self.batch_size):
            crops = np.stack([crop for _, _, crop in jobs[start:start + self.batch_size]])
            x = face_to_input(crops, "rgb").to(self.device, self.dtype)
            faces = output_to_face(self.run_network(x).float(), "rgb")
            if weight < 1.0:
                faces = cv2.addWeighted(faces.reshape(-1, 512 * 3), weight,
                                        crops.reshape(-1, 512 * 3), 1 - weight, 0
                                        ).reshape(faces.shape)
            restored_faces.extend(faces)
        inverses = [fa.inverse_matrix(matrix, 1.0) for _, matrix, _ in jobs]
        masks: list = [None] * len(jobs)  # (region, mask) per face; None: square mask
        if self.use_parser and jobs:
            masks = self.paste_masks(frames, jobs, job_landmarks, restored_faces, inverses)
        images = [frame.image for frame in frames]
        for (pos, _, _), face, inverse, mask in zip(jobs, restored_faces, inverses, masks,
                                                    strict=True):
            images[pos] = fa.paste_face(images[pos], face, inverse, mask_region=mask)
        return [VideoFrame(f.index, image, f.face) for f, image in zip(frames, images, strict=True)]

    def mask_keys(self, faces: list[tuple[VideoFrame, np.ndarray]]) -> list[tuple | None]:
        """The presenter cache's key of each (frame, landmarks) face; None: made every
        time, as "parse" does."""
        if self.mask_cache is None:
            return [None] * len(faces)
        return [pm.mask_key(frame, landmarks) for frame, landmarks in faces]

    def paste_masks(self, frames: list[VideoFrame], jobs: list, landmarks: list,
                    restored_faces: list, inverses: list) -> list:
        """The parser's soft mask, in frame coordinates, of every face of a chunk: parsed
        from each restored face ("parse", the official path) or, "presenter", from the
        cache when this replica has made the mask of that motion-clip frame before, else
        parsed from this restored face (the first output frame of that motion frame it
        sees) and kept (paste_masks.masks_through_cache)."""
        from talkinghead.services.common.metrics import PARSE_MASKS
        from talkinghead.services.restore.face_parsing import parse

        def make(js: list[int]) -> list[pm.PasteMask]:
            made = []
            for start in range(0, len(js), self.batch_size):
                part = js[start:start + self.batch_size]
                classes = parse(self.parser, np.stack([restored_faces[j] for j in part]), "rgb")
                for j, parsed in zip(part, classes, strict=True):
                    h, w = frames[jobs[j][0]].image.shape[:2]
                    made.append(pm.PasteMask(*fa.parse_mask_region(parsed, inverses[j], h, w)))
                    PARSE_MASKS.labels(self.paste_mask).inc()
            return made

        keys = self.mask_keys([(frames[job[0]], lm) for job, lm in zip(jobs, landmarks,
                                                                        strict=True)])
        masks = pm.masks_through_cache(self.mask_cache, keys, make)
        return [(m.region, m.mask) for m in masks]

    @torch.inference_mode()
    def restore_on_device(self, frames: list[VideoFrame], weight: float = 0.5,
                          only_center_face: bool = False) -> list[VideoFrame]:
        """Crop, network, parser, mask blur and paste-back of each batch of faces on the
        engine's device (services/restore/device_paste.py: the host path's arithmetic,
        bit-identical on cpu and cuda but for the mask blur's last bits); the frames go to
        the device once and come back once."""
        from talkinghead.services.restore import device_paste as dp

        jobs = []  # (frame position, alignment matrix)
        keys = []  # the presenter cache's key of each face
        for pos, frame in enumerate(frames):
            landmarks = self.landmarks_of(frame, only_center_face)
            jobs.extend((pos, fa.alignment_matrix(lm)) for lm in landmarks)
            keys.extend(self.mask_keys([(frame, lm) for lm in landmarks]))
        if not jobs:
            return [VideoFrame(f.index, f.image, f.face) for f in frames]
        device = torch.device(self.device)
        originals = {pos: torch.from_numpy(np.ascontiguousarray(frames[pos].image)).to(device)
                     for pos in sorted({pos for pos, _ in jobs})}
        pasted = dict(originals)
        border = fa.BORDER_BGR[::-1]  # our frames are RGB
        for start in range(0, len(jobs), self.batch_size):
            batch = jobs[start:start + self.batch_size]
            crops = torch.cat([dp.warp_crops(torch.stack([originals[pos] for pos, _ in group]),
                                             [m for _, m in group], border)
                               for group in by_shape(batch, originals)])
            numbered = list(enumerate(batch))
            order_ids = [i for group in by_shape([(pos, i) for i, (pos, _) in numbered],
                                                 originals) for _, i in group]
            order = [batch[i] for i in order_ids]
            faces = dp.output_to_faces(
                self.run_network(dp.crops_to_input(crops).to(self.dtype)).float())
            if weight < 1.0:
                faces = dp.blend_with_crops(faces, crops, weight)
            if self.use_parser:
                face_masks = self.device_masks(faces, [keys[start + i] for i in order_ids])
            # one paste per face; a frame with several faces takes them in turn
            rounds: list[list[int]] = []
            for k, (pos, _) in enumerate(order):
                free = next((r for r in rounds if all(order[i][0] != pos for i in r)), None)
                if free is None:
                    rounds.append(free := [])
                free.append(k)
            for r in rounds:
                for group in by_shape([(k, order[k][0]) for k in r],
                                      {k: pasted[order[k][0]] for k in r}):
                    ks = [k for k, _ in group]
                    inverses = [fa.inverse_matrix(order[k][1], 1.0) for k in ks]
                    background = torch.stack([pasted[order[k][0]] for k in ks])
                    height, width = background.shape[1:3]
                    if self.use_parser:
                        masks = torch.stack([face_masks[k] for k in ks])
                        out = dp.paste_faces(background, faces[ks], inverses, masks)
                    else:
                        masks = [fa.square_soft_mask(inv, height, width) for inv in inverses]
                        out = dp.paste_faces(background, faces[ks], inverses, masks, square=True)
                    for k, image in zip(ks, out, strict=True):
                        pasted[order[k][0]] = image
        images = [frame.image for frame in frames]
        for pos, image in pasted.items():
            images[pos] = image.cpu().numpy()
        return [VideoFrame(f.index, image, f.face) for f, image in zip(frames, images, strict=True)]

    def device_masks(self, faces: torch.Tensor, keys: list) -> list[torch.Tensor]:
        """The parse mask in face coordinates, on the device, of each restored face
        [N,S,S,3]: the parser and the blur on the device (device_paste.parse_face_masks),
        once per motion-clip frame in presenter mode (paste_masks.masks_through_cache)."""
        from talkinghead.services.common.metrics import PARSE_MASKS
        from talkinghead.services.restore.device_paste import parse_face_masks
        from talkinghead.services.restore.face_parsing import parse_tensor

        def make(js: list[int]) -> list[pm.PasteMask]:
            classes = parse_tensor(self.parser, faces[js].permute(0, 3, 1, 2))
            PARSE_MASKS.labels(self.paste_mask).inc(len(js))
            return [pm.PasteMask(None, m) for m in parse_face_masks(classes)]

        return [m.mask for m in pm.masks_through_cache(self.mask_cache, keys, make)]


COMPILE_ENV = "TALKINGHEAD_COMPILE"  # what --compile auto means: on or off


def compile_mode(asked: bool | str, device: str) -> bool:
    """Whether to torch.compile the network. ``auto`` (the default): on a CPU, where it
    pays within the first video (BENCHMARKS.md, "Restore at the cost of GFPGAN": a compile
    of about a minute at warm-up against about a third of GFPGAN's time saved per frame);
    off on cuda and mps until measured there. TALKINGHEAD_COMPILE=on|off decides ``auto``."""
    if isinstance(asked, bool):
        return asked
    if asked not in ("auto", "on", "off"):
        raise ValueError(f"compile must be auto, on or off, not {asked!r}")
    if asked == "auto":
        asked = os.environ.get(COMPILE_ENV, "").strip().lower() or (
            "on" if torch.device(device).type == "cpu" else "off")
        if asked not in ("on", "off"):
            raise ValueError(f"{COMPILE_ENV} must be on or off, not {asked!r}")
    return asked == "on"


def by_shape(jobs: list, tensors: dict) -> list[list]:
    """``jobs`` (key, ...) grouped by the shape of ``tensors[key]``, order kept in each."""
    groups: dict[tuple, list] = {}
    for job in jobs:
        groups.setdefault(tuple(tensors[job[0]].shape), []).append(job)
    return list(groups.values())


def to_channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """channels_last for the 4-D tensors only (the modulated convs keep 5-D weights, which
    ``module.to(memory_format=...)`` refuses)."""
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.dim() == 4:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return module
