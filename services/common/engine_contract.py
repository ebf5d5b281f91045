"""What an engine is: the one contract per stage that every engine, lite and neural, implements.

An engine is a warm model for one stage, behind one server. Every engine has

  * ``name``        what ``--engine`` calls it and what ``EngineInfo.name`` says ("gfpgan");
  * ``device``      where it runs ("cpu", "cuda", "mps");
  * ``fingerprint`` which weights (and variant) it runs: two engines with the same
                    fingerprint give the same pictures (clips are cached under it);
  * ``warmup()``    one small pass, done before the server reports SERVING;
  * ``from_settings(settings, device)``  how a server builds it (``talkinghead serve``);

and the stage's one method:

  * motion:  ``prepare(photo)`` (the face it will anchor on; NoFaceError early) and
             ``animate(photo, template, options)`` -> frames;
  * lipsync: ``sync(frames, audio, fps, pass_through_faceless)`` -> frames;
  * restore: ``restore(frames, weight, only_center_face)`` -> frames.

A new engine is one class deriving from its stage's contract (``MotionEngine``,
``LipSyncEngine``, ``RestoreEngine``; a network-backed one from ``NeuralEngine`` too) plus one
line in ``talkinghead.services.stages``. Engines raise the errors of ``errors.py``; the server
maps them to gRPC status codes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from talkinghead.services.common.errors import WeightsError
from talkinghead.services.common.frames import FaceGeometry, VideoFrame

if TYPE_CHECKING:
    from talkinghead.services.common.server import ServerSettings
    from talkinghead.services.motion.options import MotionOptions, MotionReport
    from talkinghead.services.motion.template import MotionTemplate


class Engine(ABC):
    """The part of the contract every stage shares."""

    stage: ClassVar[str]  # set by the stage contracts below
    name: ClassVar[str]
    device: str = "cpu"
    fingerprint: str

    @classmethod
    def from_settings(cls, settings: ServerSettings, device: str) -> Engine:
        """The engine as ``talkinghead serve`` builds it (``device`` already resolved)."""
        return cls()

    @abstractmethod
    def warmup(self) -> None:
        """One small pass, so the first real request is not slower than the rest."""


class NeuralEngine(Engine):
    """The opening every network-backed engine shares: its weights folder, device, dtype and
    batch size. Subclasses call ``super().__init__`` first, then load their networks from
    ``self.weights_dir`` and move them to ``self.device`` / ``self.dtype``."""

    def __init__(self, weights_dir: Path | None, device: str, batch_size: int = 4,
                 half: bool = False):
        import torch

        if weights_dir is None:
            raise WeightsError("no weights directory given (--weights or TALKINGHEAD_WEIGHTS_DIR)")
        self.weights_dir = Path(weights_dir)
        self.device = device
        # Half precision (--half) only where the hardware does it natively, and off by
        # default: it has not yet been measured against the reference tolerances on a GPU.
        self.dtype = torch.float16 if half and device in ("cuda", "mps") else torch.float32
        self.batch_size = max(1, batch_size)

    @classmethod
    def from_settings(cls, settings: ServerSettings, device: str) -> Engine:
        return cls(settings.weights_dir, device, settings.batch_size, half=settings.half)


class MotionEngine(Engine):
    """Photo + driving template -> animated frames carrying the face geometry."""

    stage = "motion"

    @abstractmethod
    def prepare(self, photo: np.ndarray) -> FaceGeometry:
        """The face the motion will be anchored on; NoFaceError if the photo has none."""

    @abstractmethod
    def animate(self, photo: np.ndarray, template: MotionTemplate, options: MotionOptions,
                report: MotionReport | None = None) -> Iterator[VideoFrame]:
        """One frame per template frame (the template already resampled to ``options.fps``).
        ``report``, when given, is filled in before the first frame is yielded: what was
        done with the driving options, and what was not (with the reason)."""


class LipSyncEngine(Engine):
    """Frames + 16 kHz mono speech -> the same frames with the mouth following the speech."""

    stage = "lipsync"

    @abstractmethod
    def sync(self, frames: Iterable[VideoFrame], audio: np.ndarray, fps: float,
             pass_through_faceless: bool = False) -> Iterator[VideoFrame]:
        """Frame ``i`` shows the audio at ``frame.index / fps``; frames stream in and out."""


class RestoreEngine(Engine):
    """A chunk of frames -> the same frames (indices, geometry) with the face cleaned up."""

    stage = "restore"

    @abstractmethod
    def restore(self, frames: list[VideoFrame], weight: float = 0.5,
                only_center_face: bool = False) -> list[VideoFrame]:
        """``weight`` blends the restored face with the input (1: fully restored)."""


def describe(engine: Engine) -> dict[str, Any]:
    """The engine's identity, as logs and EngineInfo carry it."""
    return {"name": engine.name, "device": engine.device, "fingerprint": engine.fingerprint}
