"""Making a driving template from a video: the motion extractor M on every frame.

As the official pipeline does for a driving video, each frame is cropped around its face
(our detector, with the crop boxes smoothed over neighbouring frames so detector jitter
does not become head motion), M predicts the head pose, expression, scale and translation,
and the template stores them per frame: R (from the pose bins), exp, scale, t, and fps.

``extract_template_file`` is the whole of ``talkinghead template extract``: load M from the
weights folder, read the video, write the checked template.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from talkinghead.services.common.errors import InputError, NoFaceError
from talkinghead.services.common.face_detection import largest_face
from talkinghead.services.common.frames import FaceGeometry
from talkinghead.services.motion.face_crop import NETWORK_SIZE, crop_for_face
from talkinghead.services.motion.keypoints import KeypointInfo

log = logging.getLogger(__name__)


def smooth_faces(faces: list[FaceGeometry], window: int = 5) -> list[FaceGeometry]:
    """Moving average of boxes and landmarks over ``window`` frames (centred)."""
    boxes = np.array([f.box for f in faces], dtype=np.float64)
    marks = np.stack([np.asarray(f.landmarks, dtype=np.float64) for f in faces])
    half = window // 2
    out = []
    for i in range(len(faces)):
        lo, hi = max(0, i - half), min(len(faces), i + half + 1)
        out.append(FaceGeometry(box=tuple(boxes[lo:hi].mean(axis=0)),
                                landmarks=marks[lo:hi].mean(axis=0).astype(np.float32)))
    return out


def extract_template(
    video: Path,
    motion_extractor: torch.nn.Module,
    device: str = "cpu",
    batch_size: int = 8,
    max_frames: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Arrays of a template (.npz fields) from ``video``."""
    from talkinghead.services.common.video_files import read_video

    fps, frames = read_video(Path(video))
    images, faces, last = [], [], None
    for frame in frames:
        if max_frames is not None and len(images) >= max_frames:
            break
        face = largest_face(frame.image) or last
        if face is None:
            raise NoFaceError(f"no face in frame {frame.index} of {Path(video).name!r}",
                              [frame.index])
        images.append(frame.image)
        faces.append(face)
        last = face
    if not images:
        raise InputError(f"video {Path(video).name!r} has no frames")
    faces = smooth_faces(faces)
    scale, R, exp, t = [], [], [], []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            crops = [crop_for_face(f, NETWORK_SIZE).cut(img)
                     for img, f in zip(images[start:start + batch_size],
                                       faces[start:start + batch_size], strict=True)]
            x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().to(device) / 255
            info = KeypointInfo.from_heads(motion_extractor(x).to("cpu", torch.float32))
            scale.append(info.scale.numpy())
            R.append(info.R.numpy())
            exp.append(info.exp.numpy())
            t.append(info.t.numpy())
            if on_progress:
                on_progress(min(start + batch_size, len(images)), len(images))
    return {
        "scale": np.concatenate(scale).astype(np.float32),
        "R": np.concatenate(R).astype(np.float32),
        "exp": np.concatenate(exp).astype(np.float32),
        "t": np.concatenate(t).astype(np.float32),
        "fps": np.asarray(fps),
        "n_frames": np.asarray(len(images)),
    }


def extract_template_file(
    video: Path,
    out: Path,
    weights_dir: Path,
    device: str = "auto",
    *,
    max_frames: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    smooth_variance: float | None = None,
) -> dict[str, np.ndarray]:
    """A template .npz at ``out`` from ``video``, with the motion extractor of ``weights_dir``
    (official layout); returns the arrays written. WeightsError names a missing file.
    ``smooth_variance``: Kalman-smooth the motion with this observation variance
    (template_smoothing.py); the returned arrays then also carry ``jitter_raw`` and
    ``jitter_smoothed`` (angles, exp, t), which are not written to the template."""
    from talkinghead.services.common.device import resolve_device
    from talkinghead.services.motion.liveportrait_weights import load_network

    device = resolve_device(device)
    net = load_network(Path(weights_dir), "motion_extractor").to(device).eval()
    arrays = extract_template(Path(video), net, device, max_frames=max_frames,
                              on_progress=on_progress)
    if smooth_variance is None:
        save_template(arrays, Path(out))
        return arrays
    from talkinghead.services.motion.template_smoothing import jitter, smooth_template_arrays

    smoothed = smooth_template_arrays(arrays, smooth_variance)
    save_template(smoothed, Path(out))
    before, after = jitter(arrays), jitter(smoothed)
    log.info("template smoothing: jitter %s -> %s", before.as_dict(), after.as_dict())
    return {**smoothed,
            "jitter_raw": np.array([before.angles_deg, before.exp, before.t]),
            "jitter_smoothed": np.array([after.angles_deg, after.exp, after.t])}


def save_template(arrays: dict[str, np.ndarray], out: Path) -> None:
    """Write atomically, then read back through the validating loader."""
    from talkinghead.services.motion.template import template_from_npz

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    template_from_npz(buffer.getvalue(), name=Path(out).stem)  # refuse to write a bad file
    tmp = Path(out).with_suffix(".partial.npz")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(out)
