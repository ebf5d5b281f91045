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
                 bf16_cpu: bool = False, compile_network: bool = False,
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
        # faster but up to 0.30 (35 counts) off the reference, so opt-in; torch.compile is
        # ~1.5x faster after a ~1 min compile at warm-up, so opt-in for long-lived servers.
        if channels_last:
            to_channels_last(self.restorer)
        self.channels_last = channels_last
        self.bf16_cpu = bf16_cpu and device == "cpu"
        if compile_network:  # compiled on the first batch (warm-up), minutes on a CPU
            self.restorer = torch.compile(self.restorer)
        # The per-frame work around the network (crop, conversions, paste-back) as torch
        # ops on the device (device_paste.py, bit-identical to the host path on cpu and
        # cuda) on cuda and mps; on a CPU the host path (numpy/OpenCV) stays: measured no
        # faster there, and much slower when the cores are shared (torch's thread pool).
        # Not yet with the presenter mask (its cache is the host path's): on a GPU the
        # presenter mode keeps the host path until device_paste takes cached masks too.
        self.device_paste = (torch.device(device).type != "cpu"
                             and self.paste_mask != "presenter"
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
                   compile_network=options["compile"],
                   mask_cache_bytes=int(options.get("paste_mask_cache_mb", 1024)) << 20)

    @torch.inference_mode()
    def warmup(self) -> None:
        self.restorer(torch.zeros(1, 3, 512, 512, device=self.device, dtype=self.dtype))

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
        """The restorer on a batch of aligned faces, with the configured speed options."""
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

    def paste_masks(self, frames: list[VideoFrame], jobs: list, landmarks: list,
                    restored_faces: list, inverses: list) -> list:
        """The parser's soft mask, in frame coordinates, of every face of a chunk.

        "parse": parsed from each restored face (the official path). "presenter": from the
        cache when this replica has made the mask of that motion-clip frame before, else
        parsed from this restored face (the first output frame of that motion frame it sees)
        and kept; a face with no motion-frame identity (no clip key) is parsed as "parse"
        does. A mask another stream is making is waited for, not made again.
        """
        from talkinghead.services.common.metrics import PARSE_MASKS, PASTE_MASK_REUSES

        cache = self.mask_cache
        masks: list = [None] * len(jobs)
        to_parse: list[int] = []  # jobs whose restored face is parsed now
        claimed: dict[tuple, int] = {}  # key claimed by this call -> the job parsing it
        later: list[tuple[int, tuple, object]] = []  # (job, key, event or None)
        for j, (pos, _, _) in enumerate(jobs):
            key = None
            if cache is not None:
                key = pm.mask_key(frames[pos], landmarks[j])
            if key is None:
                to_parse.append(j)
            elif key in claimed:
                later.append((j, key, None))
            else:
                entry, event = cache.claim(key)
                if entry is not None:
                    masks[j] = (entry.region, entry.mask)
                    PASTE_MASK_REUSES.inc()
                elif event is None:
                    claimed[key] = j
                    to_parse.append(j)
                else:
                    later.append((j, key, event))
        owner = {j: key for key, j in claimed.items()}
        try:
            if to_parse:
                from talkinghead.services.restore.face_parsing import parse

                height_width = [frames[jobs[j][0]].image.shape[:2] for j in to_parse]
                for start in range(0, len(to_parse), self.batch_size):
                    part = to_parse[start:start + self.batch_size]
                    classes = parse(self.parser, np.stack([restored_faces[j] for j in part]),
                                    "rgb")
                    for j, parsed, (h, w) in zip(part, classes,
                                                 height_width[start:start + len(part)],
                                                 strict=True):
                        masks[j] = fa.parse_mask_region(parsed, inverses[j], h, w)
                        PARSE_MASKS.labels(self.paste_mask).inc()
                        if j in owner:
                            cache.put(owner.pop(j),
                                      pm.PasteMask(masks[j][0], masks[j][1]))
        finally:
            for key in owner.values():  # claims left by an error: the waiters make them
                cache.release(key)
        for j, key, event in later:
            if event is not None:
                event.wait(pm.WAIT_SECONDS)
                entry = cache.get(key)
            else:  # made by this call, earlier in the chunk (may be evicted already)
                mask = masks[claimed[key]]
                entry = pm.PasteMask(*mask) if mask is not None else None
            if entry is not None:
                masks[j] = (entry.region, entry.mask)
                PASTE_MASK_REUSES.inc()
                continue
            # the other stream failed, or its mask was evicted at once: make it here
            from talkinghead.services.restore.face_parsing import parse

            h, w = frames[jobs[j][0]].image.shape[:2]
            parsed = parse(self.parser, restored_faces[j][None], "rgb")[0]
            masks[j] = fa.parse_mask_region(parsed, inverses[j], h, w)
            PARSE_MASKS.labels(self.paste_mask).inc()
        return masks


    @torch.inference_mode()
    def restore_on_device(self, frames: list[VideoFrame], weight: float = 0.5,
                          only_center_face: bool = False) -> list[VideoFrame]:
        """Crop, network, parser and paste-back of each batch of faces on the engine's
        device (services/restore/device_paste.py: the host path's arithmetic, bit-identical
        on cpu and cuda); the frames go to the device once and come back once."""
        from talkinghead.services.restore import device_paste as dp

        jobs = []  # (frame position, alignment matrix)
        for pos, frame in enumerate(frames):
            for landmarks in self.landmarks_of(frame, only_center_face):
                jobs.append((pos, fa.alignment_matrix(landmarks)))
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
            order = [job for group in by_shape(batch, originals) for job in group]
            faces = dp.output_to_faces(
                self.run_network(dp.crops_to_input(crops).to(self.dtype)).float())
            if weight < 1.0:
                faces = dp.blend_with_crops(faces, crops, weight)
            if self.use_parser:
                from talkinghead.services.restore.face_parsing import parse_tensor

                classes = parse_tensor(self.parser, faces.permute(0, 3, 1, 2)).cpu().numpy()
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
                        masks = [fa.parse_face_mask(classes[k]) for k in ks]
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
