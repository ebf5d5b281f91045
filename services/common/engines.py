"""Choosing an engine: the neural one when it can run, else the classical lite fallback."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from talkinghead.services.common.device import resolve_device
from talkinghead.services.common.engine_contract import Engine
from talkinghead.services.common.errors import WeightsError

if TYPE_CHECKING:
    from talkinghead.services.common.server import ServerSettings
    from talkinghead.services.stages import EngineEntry

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")


def choose_engine(settings: ServerSettings) -> Engine:
    """Build the engine ``settings.engine`` names for ``settings.stage`` ('auto', or a name in
    the stage registry, ``talkinghead.services.stages``).

    'auto' takes the stage's neural engines in the registry's order, the first whose weights
    load, and says so; otherwise it falls back to lite and says why. Naming an engine
    explicitly never falls back: a missing or broken checkpoint is an error
    (FAILED_PRECONDITION).
    """
    from talkinghead.services.stages import stage as stage_named

    if settings.device not in DEVICES:
        raise ValueError(f"unknown device {settings.device!r} ({', '.join(DEVICES)})")
    stage = stage_named(settings.stage)
    if settings.engine != "auto":
        return _built(stage.name, stage.engine(settings.engine), settings)
    *neural, fallback = stage.auto_order()
    for n, entry in enumerate(neural, 1):
        try:
            return _built(stage.name, entry, settings)
        except WeightsError as exc:
            then = "trying the next" if n < len(neural) else "using the lite fallback"
            log.warning("%s: %s; %s", stage.name, exc, then)
    return _built(stage.name, fallback, settings)


def _built(stage: str, entry: EngineEntry, settings: ServerSettings) -> Engine:
    """The engine on its device (classical, non-neural engines run on the CPU), checked to
    implement the stage's contract."""
    device = resolve_device(settings.device) if entry.neural else "cpu"
    engine = entry.build(settings, device)
    if not isinstance(engine, Engine) or engine.stage != stage:
        raise TypeError(f"{type(engine).__name__} is not a {stage} engine (derive it from "
                        f"the {stage} contract in services/common/engine_contract.py)")
    return engine

