"""The motion-clip cache: a presenter's animated clip is rendered once, then reused.

The motion clip depends only on the face photo, the driving template, the motion options
and the engine's weights, never on the speech. So the second video of a presenter skips
the motion stage entirely (for LivePortrait about 1.2 TFLOPs per frame). The key hashes
exactly those four things; a change of weights changes the engine fingerprint and with
it the key.

Each entry is a folder holding the frames as one raw ``.npy`` (memory-mapped on read: no
decode, no lossy re-encode) and the face geometry. Entries are written to a temporary
folder and renamed into place, so a crash never leaves a half entry. The oldest entries
are dropped when the cache outgrows its byte budget.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from talkinghead.services.common.frames import FaceGeometry, VideoFrame
from talkinghead.services.motion.options import MotionOptions
from talkinghead.services.motion.template import MotionTemplate

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    default = Path.home() / ".cache" / "talkinghead" / "motion-clips"
    return Path(os.environ.get("TALKINGHEAD_CACHE_DIR", default))


def template_digest(template: MotionTemplate) -> str:
    digest = hashlib.sha256()
    for array in (template.scale, template.R, template.exp, template.t,
                  template.eye_ratio, template.lip_ratio):
        if array is None:
            continue
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    digest.update(f"{template.fps:g}".encode())
    return digest.hexdigest()[:16]


def clip_key(face_bytes: bytes, template: MotionTemplate, options: MotionOptions,
             engine_fingerprint: str) -> str:
    parts = [
        hashlib.sha256(face_bytes).hexdigest(),
        template_digest(template),
        options.cache_key(),
        engine_fingerprint,
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


class MotionClipCache:
    def __init__(self, root: Path | None = None, max_bytes: int | None = None):
        self.root = Path(root or default_cache_dir())
        gigabytes = float(os.environ.get("TALKINGHEAD_CACHE_MAX_GB", "20"))
        self.max_bytes = max_bytes if max_bytes is not None else int(gigabytes * 1e9)

    def get(self, key: str) -> list[VideoFrame] | None:
        entry = self.root / key
        if not (entry / "meta.json").is_file():
            return None
        try:
            frames = np.load(entry / "frames.npy", mmap_mode="r", allow_pickle=False)
            geometry = np.load(entry / "geometry.npz", allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("motion cache entry %s unreadable (%s); ignoring it", key, exc)
            return None
        os.utime(entry / "meta.json")  # recently used: evicted last
        crop = geometry["crop_transform"]
        clip = []
        for i in range(frames.shape[0]):
            face = None
            if geometry["has_face"][i]:
                face = FaceGeometry(
                    box=tuple(float(v) for v in geometry["box"][i]),
                    landmarks=geometry["landmarks"][i].copy(),
                    crop_transform=crop[i].copy() if geometry["has_crop"][i] else None,
                    crop_size=int(geometry["crop_size"][i]),
                )
            clip.append(VideoFrame(i, np.asarray(frames[i]), face))
        return clip

    def info(self, key: str) -> dict:
        """The ``info`` an entry was stored with ({} if it is gone or unreadable)."""
        try:
            return json.loads((self.root / key / "meta.json").read_text())
        except (OSError, ValueError):
            return {}

    def put(self, key: str, clip: list[VideoFrame], info: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        n = len(clip)
        has_face = np.array([f.face is not None for f in clip])
        box = np.zeros((n, 4), np.float32)
        landmarks = np.zeros((n, 5, 2), np.float32)
        crop = np.zeros((n, 2, 3), np.float32)
        has_crop = np.zeros(n, bool)
        crop_size = np.zeros(n, np.int32)
        for i, frame in enumerate(clip):
            if frame.face is None:
                continue
            box[i] = frame.face.box
            landmarks[i] = np.asarray(frame.face.landmarks).reshape(5, 2)
            if frame.face.crop_transform is not None:
                crop[i], has_crop[i] = frame.face.crop_transform, True
            crop_size[i] = frame.face.crop_size
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=self.root))
        try:
            np.save(staging / "frames.npy", np.stack([f.image for f in clip]))
            np.savez(staging / "geometry.npz", has_face=has_face, box=box, landmarks=landmarks,
                     crop_transform=crop, has_crop=has_crop, crop_size=crop_size)
            (staging / "meta.json").write_text(json.dumps({**info, "frames": n,
                                                           "created": time.time()}))
            os.replace(staging, self.root / key)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if (self.root / key / "meta.json").is_file():
                return  # another worker stored the same clip first
            raise
        self.evict()

    def evict(self) -> None:
        """Drop least recently used entries until the cache fits its budget."""
        entries = []
        for entry in self.root.iterdir():
            meta = entry / "meta.json"
            if entry.is_dir() and meta.is_file():
                size = sum(p.stat().st_size for p in entry.iterdir())
                entries.append((meta.stat().st_mtime, size, entry))
        total = sum(size for _, size, _ in entries)
        for _, size, entry in sorted(entries):
            if total <= self.max_bytes:
                break
            shutil.rmtree(entry, ignore_errors=True)
            total -= size
            log.info("motion cache: evicted %s", entry.name)
