"""Shared benchmark plumbing: timing, FLOP counting, appending results to BENCHMARKS.md."""

from __future__ import annotations

import datetime as dt
import math
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.utils.flop_counter import FlopCounterMode

from talkinghead.services.common.engine_contract import Engine
from talkinghead.services.stages import stage as stage_named
from talkinghead.services.stages import stages

ROOT = Path(__file__).resolve().parents[1]
K = TypeVar("K")
# "neural" on a bench command line: the engine `--engine auto` tries first, per stage
NEURAL_ENGINE = {stage.name: stage.neural_engine for stage in stages()}


def build_engine(stage: str, engine: str, weights: Path | None, device: str, batch_size: int,
                 paste_mask: str = "auto", warm: bool = True, **options: Any) -> Engine:
    """The stage's engine exactly as ``talkinghead serve STAGE`` builds it (``warm``: and
    warms it up, as a server does before it reports SERVING). ``paste_mask`` and ``options``
    are the stage flags (services/stages.py); those the stage does not have are ignored, as
    ``talkinghead serve`` ignores another stage's flags."""
    from talkinghead.services.common.engines import choose_engine
    from talkinghead.services.common.server import ServerSettings

    known = stage_named(stage).option_defaults()
    given = {"paste_mask": paste_mask, **options}
    settings = ServerSettings(stage=stage, port=0, engine=engine, device=device,
                              weights_dir=weights, batch_size=batch_size,
                              options={k: v for k, v in given.items() if k in known})
    built = choose_engine(settings)
    if warm:
        built.warmup()
    return built


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call, counted by torch's FlopCounterMode (multiply-add = 2 FLOPs)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class Timing:
    """Seconds of one call, one sample per interleaved round (see ``interleaved_timings``)."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """(slowest − fastest) / median: how much the machine moved during the samples."""
        return (max(self.samples) - min(self.samples)) / self.median


def interleaved_timings(calls: dict[K, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                        min_sample_seconds: float = 0.0) -> dict[K, Timing]:
    """Every call timed ``repeats`` times, in rounds that run each call once.

    These machines are shared: a burst of someone else's load lands on one round, so it
    touches every call alike instead of all samples of one call, and figures taken in the
    same rounds (the machine's limit, each network) stay comparable. Reported as the median
    with the spread. A call shorter than ``min_sample_seconds`` is repeated within its sample
    (the count fixed at warm-up) and the sample divided by it, so clock resolution and
    dispatch overhead do not dominate tiny kernels.
    """
    per_sample: dict[K, int] = {}
    for key, fn in calls.items():
        for _ in range(warmup):
            fn()
        elapsed = _timed(fn, 1)
        per_sample[key] = max(1, math.ceil(min_sample_seconds / max(elapsed, 1e-9)))
    samples: dict[K, list[float]] = {key: [] for key in calls}
    for _ in range(max(1, repeats)):
        for key, fn in calls.items():
            samples[key].append(_timed(fn, per_sample[key]) / per_sample[key])
    return {key: Timing(tuple(values)) for key, values in samples.items()}


def _timed(fn: Callable[[], object], times: int) -> float:
    start = time.perf_counter()
    for _ in range(times):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def time_call(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Median seconds of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(_timed(fn, 1) for _ in range(repeats))


def machine_line(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else ""
    return f"{device} ({gpu or cpu}, torch {torch.__version__}, {threads} threads)"


def append_markdown(module: str, title: str, table: list[str], device: str,
                    notes: list[str] | None = None) -> None:
    """Append a dated section, with the command that produced it, to BENCHMARKS.md."""
    command = " ".join(shlex.quote(a) for a in ["python", "-m", module, *sys.argv[1:]])
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {title}", "", f"- date: {stamp}", f"- device: {machine_line(device)}",
             f"- command: `{command}`", ""] + table + [""] + [f"{n}" for n in notes or []] + [""]
    path = ROOT / "BENCHMARKS.md"
    if not path.exists():
        path.write_text("# Benchmarks\n\nFigures appended by `python -m bench`; each section "
                        "names the command that produced it.\n\n")
    with path.open("a") as fh:
        fh.write("\n".join(lines) + "\n")
