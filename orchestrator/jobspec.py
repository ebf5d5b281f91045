"""The job a content system submits: what to render, from what, to where.

Validated in two steps on purpose: the schema (pydantic) when the task is received, and the
files themselves (``check_inputs``) before any model is called, so that a bad job fails in
milliseconds with a reason and nothing half-written. ``check_inputs`` runs once per job and
returns what it read (``CheckedInputs``: the face file, the decoded audio, the template),
which the pipeline uses instead of reading the files again.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from talkinghead.orchestrator.speech_dynamics import SpeechDynamics
from talkinghead.orchestrator.speech_dynamics import measure as measure_speech
from talkinghead.services.common import option_ranges as ranges
from talkinghead.services.common.audio import (
    DEFAULT_MAX_AUDIO_SECONDS,
    SAMPLE_RATE,
    decode_audio_file,
)
from talkinghead.services.common.errors import InputError
from talkinghead.services.common.wire import check_image_file
from talkinghead.services.motion.options import MotionOptions
from talkinghead.services.motion.template import MotionTemplate, load_template

log = logging.getLogger(__name__)

MAX_FACE_PIXELS = 40_000_000
MAX_LOGO_PIXELS = 40_000_000  # drawn at most a few hundred pixels wide; the limit bounds its decode


class JobCard(BaseModel):
    """The job advert shown on the right of the frame."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    title: str = Field(min_length=1, max_length=200)
    company: str = Field(min_length=1, max_length=200)
    location: str = Field(min_length=1, max_length=200)
    skills: list[str] = Field(min_length=1, max_length=30)
    ticker: str | None = Field(default=None, max_length=2000)
    channel_name: str | None = Field(default=None, max_length=60)

    @field_validator("skills")
    @classmethod
    def _skills_not_blank(cls, skills: list[str]) -> list[str]:
        cleaned = [s.strip() for s in skills if s.strip()]
        if not cleaned:
            raise ValueError("at least one non-empty skill is required")
        return cleaned


AUTO = "auto"


class RenderOptions(MotionOptions):
    """The job's options: the motion stage's own (fps, max_side, relative_motion,
    expression_multiplier, stitching, eye_retargeting, lip_retargeting and the driving
    options: see MotionOptions), stated flat beside the rest. ``fps`` is the output video's
    rate too. ``expression_multiplier`` may also be ``"auto"``: set from the speech's
    dynamics (speech_dynamics.py) when the job's inputs are checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    expression_multiplier: Annotated[float, Field(
        ge=ranges.MOTION_EXPRESSION_MULTIPLIER.low,
        le=ranges.MOTION_EXPRESSION_MULTIPLIER.high)] | Literal["auto"] = 1.0

    restore: bool = True
    restore_weight: float = Field(default=0.5, ge=ranges.RESTORE_WEIGHT.low,
                                  le=ranges.RESTORE_WEIGHT.high)
    crf: int = Field(default=20, ge=0, le=51)
    preset: str = "veryfast"
    restore_chunk_frames: int = Field(default=16, ge=1, le=256)
    motion_cache: bool = True  # reuse the motion clip of an earlier job (same face, template)

    @property
    def motion(self) -> MotionOptions:
        """The motion stage's part, as the motion client sends it (a fixed expression
        multiplier; with ``"auto"`` ask ``CheckedInputs.motion``, which knows the speech)."""
        if self.expression_multiplier == AUTO:
            raise ValueError("expression_multiplier 'auto' is set from the speech: use "
                             "CheckedInputs.motion")
        return self.motion_with(float(self.expression_multiplier))

    def motion_with(self, expression_multiplier: float) -> MotionOptions:
        """The motion stage's part with this expression multiplier."""
        values = self.model_dump(include=set(MotionOptions.model_fields))
        return MotionOptions(**{**values, "expression_multiplier": expression_multiplier})


class JobSpec(BaseModel):
    """Everything one render needs. Paths are on the worker's file system."""

    model_config = ConfigDict(extra="forbid")

    face: Path
    audio: Path
    card: JobCard
    output: Path
    template: str = "talking"
    logo: Path | None = None
    options: RenderOptions = Field(default_factory=RenderOptions)
    job_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])


def allowed_roots(variable: str) -> list[Path]:
    """Folders from a ``os.pathsep``-separated environment variable (empty: no confinement)."""
    return [Path(p).resolve() for p in os.environ.get(variable, "").split(os.pathsep) if p]


def check_confined(path: Path, roots: list[Path], what: str) -> None:
    """Refuse a path that resolves (symlinks and '..' followed) outside every root."""
    if not roots:
        return
    real = Path(path).resolve()
    if not any(real == root or root in real.parents for root in roots):
        raise InputError(f"{what} {str(path)!r} is outside the allowed folders "
                         f"({', '.join(str(r) for r in roots)})")


def check_paths(spec: JobSpec) -> None:
    """Job files must live under TALKINGHEAD_INPUT_ROOTS / TALKINGHEAD_OUTPUT_ROOTS when the
    operator sets them: a job can then neither read nor overwrite anything else."""
    inputs = allowed_roots("TALKINGHEAD_INPUT_ROOTS")
    check_confined(Path(spec.face), inputs, "face image")
    check_confined(Path(spec.audio), inputs, "audio file")
    if spec.logo is not None:
        check_confined(Path(spec.logo), inputs, "logo")
    if Path(spec.template).suffix in (".npz", ".pkl"):
        check_confined(Path(spec.template), inputs, "template")
    check_confined(Path(spec.output), allowed_roots("TALKINGHEAD_OUTPUT_ROOTS"), "output")


@dataclass(frozen=True)
class CheckedInputs:
    """A job whose inputs were all opened and found usable, with what was read from them.

    Made once per job by ``check_inputs``; the pipeline takes the face, audio and template
    from here and reads none of those files again (the output's audio track is muxed from
    ``spec.audio`` by ffmpeg, the logo drawn from ``spec.logo``, both checked here).
    """

    spec: JobSpec
    face: bytes  # the face image file as read: sent to the motion stage, hashed for its cache
    audio: np.ndarray  # the speech, decoded: 16 kHz mono float32
    template: MotionTemplate  # the driving template, loaded
    # the expression multiplier in use: the job's number, or the one "auto" took from the
    # speech (then with the measure it came from)
    expression_multiplier: float = 1.0
    speech_dynamics: SpeechDynamics | None = None

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def motion(self) -> MotionOptions:
        """The motion options as sent, ``expression_multiplier`` resolved (and so in the
        motion-cache key)."""
        return self.spec.options.motion_with(self.expression_multiplier)

    def expression_summary(self) -> dict:
        """For the task result: the multiplier used, where it came from, and the measure."""
        summary: dict = {"expression_multiplier": self.expression_multiplier,
                         "expression_multiplier_source": "auto" if self.speech_dynamics
                         else "fixed"}
        if self.speech_dynamics is not None:
            summary["speech_dynamics"] = self.speech_dynamics.to_dict()
        return summary


def check_inputs(spec: JobSpec, max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS
                 ) -> CheckedInputs:
    """Open every input once and refuse the job early, naming the problem; what was read
    comes back in a ``CheckedInputs``, so nothing is read or decoded twice."""
    check_paths(spec)
    face = Path(spec.face)
    if not face.is_file():
        raise InputError(f"face image {str(face)!r} does not exist")
    # the header first: an image whose decode would take gigabytes is refused unread
    check_image_file(face, MAX_FACE_PIXELS, f"face image {face.name!r}")
    face_bytes = face.read_bytes()
    image = cv2.imdecode(np.frombuffer(face_bytes, np.uint8), cv2.IMREAD_UNCHANGED) if (
        face_bytes) else None
    if image is None:
        raise InputError(f"face image {face.name!r} is not a decodable image")
    if image.shape[0] * image.shape[1] > MAX_FACE_PIXELS:
        raise InputError(f"face image {face.name!r} exceeds {MAX_FACE_PIXELS} pixels")
    if spec.logo is not None:
        logo = Path(spec.logo)
        if not logo.is_file():
            raise InputError(f"logo {str(logo)!r} is missing or not a decodable image")
        check_image_file(logo, MAX_LOGO_PIXELS, f"logo {logo.name!r}")
        if cv2.imread(str(logo)) is None:
            raise InputError(f"logo {str(logo)!r} is missing or not a decodable image")
    template = load_template(spec.template)
    check_output_path(Path(spec.output))
    audio = decode_audio_file(Path(spec.audio), max_audio_seconds)
    expression, dynamics = spec.options.expression_multiplier, None
    if expression == AUTO:
        dynamics = measure_speech(audio)
        expression = dynamics.multiplier
        log.info("expression_multiplier auto: %g (pitch range %.2f st, loudness spread %.1f dB "
                 "over %.1f s voiced, liveliness %.2f)", expression, dynamics.pitch_range_st,
                 dynamics.loudness_spread_db, dynamics.voiced_s, dynamics.liveliness)
    return CheckedInputs(spec=spec, face=face_bytes, audio=audio, template=template,
                         expression_multiplier=float(expression), speech_dynamics=dynamics)


def check_output_path(output: Path) -> None:
    if output.suffix.lower() not in (".mp4", ".m4v", ".mov"):
        raise InputError(f"output {str(output)!r} must end in .mp4 (H.264 + AAC in MP4)")
    if output.is_dir():
        raise InputError(f"output {str(output)!r} is a directory")
    folder = output.parent
    if not folder.is_dir():
        raise InputError(f"output folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"output folder {str(folder)!r} is not writable")


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "job"
        parts.append(f"{where}: {err['msg']}")
    return "invalid job spec: " + "; ".join(parts)
