"""Choosing an engine: the neural one when it can run, else the classical lite fallback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from talkinghead.services.common.device import resolve_device
from talkinghead.services.common.errors import WeightsError

log = logging.getLogger(__name__)


def choose_engine(
    stage: str,
    requested: str,
    device: str,
    neural_name: str,
    lite_factory: Callable[[], Any],
    neural_factory: Callable[[str], Any] | None = None,
) -> Any:
    """Build the engine ``requested`` ('auto', 'lite' or the neural name).

    'auto' takes the neural engine when it is available and its weights load, and says so;
    otherwise it falls back to lite and says why. Naming the neural engine explicitly
    never falls back: a missing or broken checkpoint is an error (FAILED_PRECONDITION).
    """
    if device not in ("auto", "cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {device!r} (auto, cpu, cuda, mps)")
    if requested == "lite":
        return lite_factory()
    if requested not in ("auto", neural_name):
        raise ValueError(f"unknown {stage} engine {requested!r} (auto, lite, {neural_name})")
    if neural_factory is None:
        if requested == neural_name:
            raise WeightsError(
                f"the {neural_name} engine is not part of this version yet; use --engine lite"
            )
        log.warning(
            "%s: no neural engine in this version; using the lite fallback (classical, "
            "no weights: not the quality of %s)", stage, neural_name,
        )
        return lite_factory()
    try:
        return neural_factory(resolve_device(device))
    except WeightsError as exc:
        if requested == neural_name:
            raise
        log.warning("%s: %s; using the lite fallback", stage, exc)
        return lite_factory()
