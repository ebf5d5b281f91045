"""Driving templates: the head motion recorded from a real video, one pose per frame.

A template holds, per frame, LivePortrait's motion parameters: ``scale`` (N, 1), rotation
``R`` (N, 3, 3), expression offsets ``exp`` (N, 21, 3) and translation ``t`` (N, 3), plus
the frame rate. Stored as ``.npz`` and always read with ``allow_pickle=False``: a template
is data, never code.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from talkinghead.services.common.errors import InputError, NotFoundError
from talkinghead.services.motion.template_pickle import npz_from_pkl

BUNDLED_TEMPLATES = "talkinghead.assets.templates"
MAX_TEMPLATE_FRAMES = 10_000
# The arrays a template may hold (ours and upstream's names); any other member is not read.
TEMPLATE_ARRAYS = ("scale", "R", "R_d", "exp", "t", "fps", "eye_ratio", "c_d_eyes_lst",
                   "lip_ratio", "c_d_lip_lst")
# The largest array a valid template holds: exp, (N, 21, 3) float64 at MAX_TEMPLATE_FRAMES.
# A .npz is a zip: a few hundred KB can inflate to gigabytes, so every member's inflated
# size and .npy header are checked against this before a byte of it is inflated.
MAX_TEMPLATE_ARRAY_BYTES = MAX_TEMPLATE_FRAMES * 21 * 3 * 8 + 4096


@dataclass(frozen=True)
class MotionTemplate:
    name: str
    scale: np.ndarray  # (N, 1)
    R: np.ndarray  # (N, 3, 3); keypoints are row vectors multiplied on the right
    exp: np.ndarray  # (N, 21, 3)
    t: np.ndarray  # (N, 3)
    fps: float
    # Eye and lip openness of the driving frames, for eye/lip retargeting; only some
    # templates carry them (the official c_d_eyes_lst (N, 1, 2) and c_d_lip_lst (N, 1, 1)).
    eye_ratio: np.ndarray | None = None  # (N, 2)
    lip_ratio: np.ndarray | None = None  # (N, 1)

    @property
    def n_frames(self) -> int:
        return int(self.R.shape[0])

    @property
    def duration(self) -> float:
        return self.n_frames / self.fps

    def resample(self, fps: float) -> MotionTemplate:
        """The same motion at another frame rate (linear in time; rotations re-orthonormalised)."""
        if fps <= 0 or abs(fps - self.fps) < 1e-9:
            return self
        n_out = max(1, int(round(self.duration * fps)))
        if n_out > MAX_TEMPLATE_FRAMES:  # 10,000 frames at 1 fps asked for at 60 fps, say
            raise InputError(
                f"template {self.name!r} lasts {self.duration:g} s: at {fps:g} fps that is "
                f"{n_out} frames, more than the {MAX_TEMPLATE_FRAMES} a clip may have"
            )
        src = np.arange(n_out) * (self.fps / fps)
        src = np.clip(src, 0, self.n_frames - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, self.n_frames - 1)
        w = (src - lo).astype(np.float32)

        def lerp(a: np.ndarray) -> np.ndarray:
            shape = (-1,) + (1,) * (a.ndim - 1)
            return (1 - w.reshape(shape)) * a[lo] + w.reshape(shape) * a[hi]

        u, _, vt = np.linalg.svd(lerp(self.R))
        R = (u @ vt).astype(np.float32)

        def optional(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else lerp(a).astype(np.float32)

        return MotionTemplate(
            self.name,
            lerp(self.scale).astype(np.float32),
            R,
            lerp(self.exp).astype(np.float32),
            lerp(self.t).astype(np.float32),
            float(fps),
            optional(self.eye_ratio),
            optional(self.lip_ratio),
        )


def read_template_arrays(source: io.BytesIO | Path, name: str) -> dict[str, np.ndarray]:
    """The template's arrays, each checked for its size before it is inflated (a zip bomb is
    refused from its headers, naming the array and its size); other members are skipped."""
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(source) as archive:
            for member in archive.infolist():
                key = member.filename.removesuffix(".npy")
                if key not in TEMPLATE_ARRAYS:
                    continue
                if member.file_size > MAX_TEMPLATE_ARRAY_BYTES:
                    raise InputError(
                        f"template {name!r}: array {key} inflates to {member.file_size} bytes, "
                        f"more than the {MAX_TEMPLATE_ARRAY_BYTES} a template of "
                        f"{MAX_TEMPLATE_FRAMES} frames needs (refused before inflating)"
                    )
                with archive.open(member) as stream:
                    version = np.lib.format.read_magic(stream)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(stream)
                    stated = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                    if dtype.hasobject or stated > MAX_TEMPLATE_ARRAY_BYTES:
                        raise InputError(
                            f"template {name!r}: array {key} states shape {shape} of {dtype}, "
                            f"not a template array (refused before reading it)"
                        )
                with archive.open(member) as stream:
                    arrays[key] = np.lib.format.read_array(stream, allow_pickle=False)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is the caller's bad file
        raise InputError(f"template {name!r} is not a readable .npz file: {exc}") from exc
    return arrays


def template_from_npz(data: bytes | Path, name: str = "custom") -> MotionTemplate:
    """Parse and validate a template file; raise InputError saying what is wrong."""
    source = io.BytesIO(data) if isinstance(data, bytes) else Path(data)
    arrays = read_template_arrays(source, name)
    if "R" not in arrays and "R_d" in arrays:
        arrays["R"] = arrays["R_d"]
    missing = [k for k in ("scale", "R", "exp", "t", "fps") if k not in arrays]
    if missing:
        raise InputError(f"template {name!r} lacks arrays: {', '.join(missing)}")
    n = arrays["R"].shape[0]
    expected = {"scale": (n, 1), "R": (n, 3, 3), "exp": (n, 21, 3), "t": (n, 3)}
    for key, shape in expected.items():
        if tuple(arrays[key].shape) != shape:
            raise InputError(
                f"template {name!r}: {key} has shape {tuple(arrays[key].shape)}, expected {shape}"
            )
    if not 1 <= n <= MAX_TEMPLATE_FRAMES:
        raise InputError(f"template {name!r} has {n} frames (1..{MAX_TEMPLATE_FRAMES} allowed)")
    fps = float(arrays["fps"])
    if not 1.0 <= fps <= 240.0:
        raise InputError(f"template {name!r} has fps {fps}, expected 1..240")
    for key in expected:
        if not np.all(np.isfinite(arrays[key])):
            raise InputError(f"template {name!r}: {key} holds NaN or infinity")
    ratios = {}
    for key, official, width in (("eye_ratio", "c_d_eyes_lst", 2), ("lip_ratio", "c_d_lip_lst", 1)):
        value = arrays.get(key, arrays.get(official))
        if value is None:
            ratios[key] = None
            continue
        if value.size != n * width or not np.all(np.isfinite(value)):
            raise InputError(f"template {name!r}: {official} must hold {n}x{width} finite values")
        ratios[key] = value.reshape(n, width).astype(np.float32)
    return MotionTemplate(
        name=name,
        scale=arrays["scale"].astype(np.float32),
        R=arrays["R"].astype(np.float32),
        exp=arrays["exp"].astype(np.float32),
        t=arrays["t"].astype(np.float32),
        fps=fps,
        **ratios,
    )


def template_from_pkl(data: bytes, name: str = "custom") -> MotionTemplate:
    """An official LivePortrait template pickle, read without running code from it."""
    return template_from_npz(npz_from_pkl(data, name), name=name)


def bundled_template_names() -> list[str]:
    folder = resources.files(BUNDLED_TEMPLATES)
    return sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".npz"))


def load_template(name_or_path: str, extra_dirs: list[Path] | None = None) -> MotionTemplate:
    """A bundled template by name, one from ``extra_dirs`` by name, or a .npz / official .pkl path."""
    path = Path(name_or_path)
    if path.suffix == ".npz" and path.is_file():
        return template_from_npz(path.read_bytes(), name=path.stem)
    if path.suffix == ".pkl" and path.is_file():
        return template_from_pkl(path.read_bytes(), name=path.stem)
    for folder in extra_dirs or []:
        candidate = Path(folder) / f"{name_or_path}.npz"
        if candidate.is_file():
            return template_from_npz(candidate.read_bytes(), name=name_or_path)
    if name_or_path in bundled_template_names():
        data = resources.files(BUNDLED_TEMPLATES).joinpath(f"{name_or_path}.npz").read_bytes()
        return template_from_npz(data, name=name_or_path)
    known = ", ".join(bundled_template_names())
    raise NotFoundError(f"unknown template {name_or_path!r} (known: {known}; or give a .npz path)")


def rotation_to_euler_degrees(R: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) in degrees from R = (Rz(roll) Ry(yaw) Rx(pitch))^T.

    Inverse of LivePortrait's camera convention (reference/liveportrait/README.md, step 4).
    """
    M = np.asarray(R, dtype=np.float64).T  # Rz @ Ry @ Rx
    yaw = np.arcsin(np.clip(-M[2, 0], -1.0, 1.0))
    pitch = np.arctan2(M[2, 1], M[2, 2])
    roll = np.arctan2(M[1, 0], M[0, 0])
    return float(np.degrees(pitch)), float(np.degrees(yaw)), float(np.degrees(roll))
