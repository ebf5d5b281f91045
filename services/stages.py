"""The stages, each described once: name, default port, engines, servicer, serve flags.

Everything that needs a per-stage fact reads it here: ``talkinghead serve`` (its stage
choice, ``--engine`` choices, default port and stage flags), ``talkinghead worker`` and the
Celery task (each stage's address variable and default address), ``talkinghead call``,
the local process launcher (``talkinghead.local_stack``) and the bench.

Adding an engine is one engine class (see ``services/common/engine_contract.py``) and one
``EngineEntry`` line below. ``--engine auto`` tries a stage's neural engines in the order
listed and falls back to its lite engine. An engine kept outside this package is added
with ``register_engine`` (in-process) or, for ``talkinghead serve`` processes, with
``TALKINGHEAD_EXTRA_ENGINES=stage:name=module:Class[;...]`` (such an engine is used when
named with ``--engine``, never by ``auto``).

Light on purpose: nothing here imports an engine, a network or gRPC until it is asked for.
"""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from talkinghead.services.common.engine_contract import Engine
    from talkinghead.services.common.server import ModelServer, ServerSettings

EXTRA_ENGINES_ENV = "TALKINGHEAD_EXTRA_ENGINES"
LOOPBACK = "127.0.0.1"


def import_object(path: str) -> Any:
    """``"package.module:Name"`` -> the object."""
    module, _, attribute = path.partition(":")
    if not module or not attribute:
        raise ValueError(f"{path!r} is not 'module:Name'")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class EngineEntry:
    """One engine of a stage: its ``--engine`` name and its class (a ``"module:Class"`` path,
    imported when the engine is built, or the class itself)."""

    name: str
    engine: str | type[Engine]
    neural: bool = True  # tried by --engine auto (in order), before the lite fallback

    def engine_class(self) -> type[Engine]:
        return import_object(self.engine) if isinstance(self.engine, str) else self.engine

    def build(self, settings: ServerSettings, device: str) -> Engine:
        return self.engine_class().from_settings(settings, device)


@dataclass(frozen=True)
class ServeFlag:
    """A ``talkinghead serve`` flag only one stage uses; its value reaches the stage's
    servicer and engines as ``ServerSettings.options[dest]``."""

    flag: str
    help: str
    default: Any = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)  # action, choices, type

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass
class Stage:
    name: str
    port: int  # default gRPC port of `talkinghead serve STAGE`
    target_env: str  # a worker's variable naming this stage's server(s)
    servicer: str  # "module:Class" of its gRPC servicer (a server.StageServicer)
    engines: dict[str, EngineEntry]
    flags: tuple[ServeFlag, ...] = ()
    replicated: bool = False  # a job spreads over several servers (comma-separated targets)
    fallback: str = "lite"  # the engine --engine auto ends with: classical, no weights

    @property
    def default_target(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def engine_names(self) -> list[str]:
        return ["auto", *self.engines]

    @property
    def neural_engine(self) -> str:
        """The engine ``auto`` tries first (the bench's "neural" engine)."""
        return next(e.name for e in self.engines.values() if e.neural)

    def auto_order(self) -> list[EngineEntry]:
        return [*(e for e in self.engines.values() if e.neural), self.engines[self.fallback]]

    def engine(self, name: str) -> EngineEntry:
        try:
            return self.engines[name]
        except KeyError:
            raise ValueError(f"unknown {self.name} engine {name!r} "
                             f"({', '.join(self.engine_names)})") from None

    def option_defaults(self) -> dict[str, Any]:
        return {f.dest: copy.copy(f.default) for f in self.flags}

    def build_server(self, settings: ServerSettings) -> ModelServer:
        """The stage's gRPC server (not started): its servicer, built from ``settings``."""
        from talkinghead.services.common.server import ModelServer

        return ModelServer(settings, import_object(self.servicer)(settings))


STAGES: dict[str, Stage] = {
    stage.name: stage for stage in (
        Stage(
            "motion", 50051, "TALKINGHEAD_MOTION_TARGET",
            "talkinghead.services.motion.server:MotionServicer",
            {
                "liveportrait": EngineEntry(
                    "liveportrait",
                    "talkinghead.services.motion.liveportrait_engine:LivePortraitEngine"),
                "lite": EngineEntry(
                    "lite", "talkinghead.services.motion.lite_engine:LiteMotionEngine",
                    neural=False),
            },
            flags=(
                ServeFlag("--templates-dir", "extra folder of .npz templates", [],
                          {"action": "append"}),
            ),
        ),
        Stage(
            "lipsync", 50052, "TALKINGHEAD_LIPSYNC_TARGET",
            "talkinghead.services.lipsync.server:LipSyncServicer",
            {
                "wav2lip": EngineEntry(
                    "wav2lip", "talkinghead.services.lipsync.wav2lip_engine:Wav2LipEngine"),
                # MuseTalk 1.5: needs the optional extra talkinghead[musetalk]
                "musetalk": EngineEntry(
                    "musetalk", "talkinghead.services.lipsync.musetalk_engine:MuseTalkEngine"),
                "lite": EngineEntry(
                    "lite", "talkinghead.services.lipsync.lite_engine:LiteLipSyncEngine",
                    neural=False),
            },
            flags=(
                ServeFlag("--face-input-cache-mb", "memory for Wav2Lip's face inputs, made "
                          "once per motion-clip frame and box, MiB (least recently used "
                          "dropped first)", 256, {"type": int}),
                ServeFlag("--musetalk-cache-mb", "memory for MuseTalk's presenter frames (both "
                          "VAE latents and the jaw mask, made once per motion-clip frame and "
                          "box), MiB (least recently used dropped first)", 256, {"type": int}),
                ServeFlag("--musetalk-blend", "MuseTalk's seam: offline (upstream's "
                          "scripts/inference.py, blur 0.05 of the crop) or realtime (its "
                          "realtime path, blur 0.1)", "offline",
                          {"choices": ["offline", "realtime"]}),
                ServeFlag("--musetalk-mask", "MuseTalk's blend mask from the face parser: jaw "
                          "(v1.5's), raw (v1's: skin, mouth, lips) or neck (those and the neck)",
                          "jaw", {"choices": ["jaw", "raw", "neck"]}),
                ServeFlag("--musetalk-integer-fps", "cut MuseTalk's audio windows for the frame "
                          "rate truncated to an integer, as upstream does (29.97 -> 29: the "
                          "mouth drifts ahead of the sound); for comparisons only", False,
                          {"action": "store_true"}),
            ),
        ),
        Stage(
            "restore", 50053, "TALKINGHEAD_RESTORE_TARGETS",
            "talkinghead.services.restore.server:RestoreServicer",
            {
                "gfpgan": EngineEntry(
                    "gfpgan", "talkinghead.services.restore.gfpgan_engine:GFPGANEngine"),
                "lite": EngineEntry(
                    "lite", "talkinghead.services.restore.lite_engine:LiteRestoreEngine",
                    neural=False),
            },
            flags=(
                ServeFlag("--paste-mask", "parse: the official face-parser mask of every "
                          "frame (exact); presenter: that mask made once per motion-clip "
                          "frame and reused; square: the cheap square mask; auto: presenter "
                          "when the parser's weights are present, else square", "auto",
                          {"choices": ["auto", "presenter", "parse", "square"]}),
                ServeFlag("--paste-mask-cache-mb", "memory for the presenter masks, MiB "
                          "(least recently used dropped first)", 1024, {"type": int}),
                ServeFlag("--bf16", "bf16 autocast on CPU: ~1.7x faster here, but up to 35 "
                          "counts off the fp32 result (see BENCHMARKS.md)", False,
                          {"action": "store_true"}),
                ServeFlag("--compile", "torch.compile GFPGAN at warm-up: auto (the default) "
                          "= on for cpu, where the ~1 min compile pays back within the "
                          "first video, off on cuda/mps until measured there; "
                          "TALKINGHEAD_COMPILE=on|off says what auto means", "auto",
                          {"choices": ["auto", "on", "off"], "nargs": "?", "const": "on"}),
            ),
            replicated=True,
        ),
    )
}


def stage(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r} ({', '.join(STAGES)})") from None


def stages() -> Iterator[Stage]:
    return iter(STAGES.values())


def register_engine(stage_name: str, entry: EngineEntry) -> None:
    """Add (or replace) an engine of a stage; ``--engine auto`` tries a neural one after
    those already listed."""
    stage(stage_name).engines[entry.name] = entry


def all_engine_names() -> list[str]:
    """Every ``--engine`` value some stage accepts, ``auto`` first."""
    names = ["auto"]
    for s in stages():
        names += [n for n in s.engines if n not in names]
    return names


def _register_extra_engines(spec: str) -> None:
    """``stage:name=module:Class[;...]`` (TALKINGHEAD_EXTRA_ENGINES): named, never auto."""
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        head, sep, path = item.partition("=")
        stage_name, colon, name = head.partition(":")
        if not (sep and colon and name and ":" in path):
            raise ValueError(f"{EXTRA_ENGINES_ENV}: {item!r} is not 'stage:name=module:Class'")
        register_engine(stage_name.strip(), EngineEntry(name.strip(), path.strip(), neural=False))


_register_extra_engines(os.environ.get(EXTRA_ENGINES_ENV, ""))
