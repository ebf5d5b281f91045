"""The job a content system submits: what to render, from what, to where.

Validated twice on purpose: the schema (pydantic) when the task is received, and the files
themselves (``check_inputs``) before any model is called, so that a bad job fails in
milliseconds with a reason and nothing half-written.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import cv2
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from talkinghead.services.common.audio import DEFAULT_MAX_AUDIO_SECONDS, decode_audio_file
from talkinghead.services.common.errors import InputError
from talkinghead.services.common.wire import check_image_file
from talkinghead.services.motion.template import load_template

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


class RenderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fps: float = Field(default=25.0, ge=10, le=60)
    restore: bool = True
    restore_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    expression_multiplier: float = Field(default=1.0, ge=0.0, le=3.0)
    relative_motion: bool = True
    # LivePortrait retargeting: needs the landmark ONNX models and a template with ratios
    eye_retargeting: bool = False
    lip_retargeting: bool = False
    max_side: int = Field(default=1024, ge=128, le=4096)
    crf: int = Field(default=20, ge=0, le=51)
    preset: str = "veryfast"
    restore_chunk_frames: int = Field(default=16, ge=1, le=256)
    motion_cache: bool = True  # reuse the motion clip of an earlier job (same face, template)


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


def check_inputs(spec: JobSpec, max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS):
    """Open every input once and refuse the job early, naming the problem.

    Returns the decoded audio (16 kHz mono float32) so it is not decoded twice.
    """
    check_paths(spec)
    face = Path(spec.face)
    if not face.is_file():
        raise InputError(f"face image {str(face)!r} does not exist")
    # the header first: an image whose decode would take gigabytes is refused unread
    check_image_file(face, MAX_FACE_PIXELS, f"face image {face.name!r}")
    image = cv2.imread(str(face), cv2.IMREAD_UNCHANGED)
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
    load_template(spec.template)
    check_output_path(Path(spec.output))
    return decode_audio_file(Path(spec.audio), max_audio_seconds)


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
