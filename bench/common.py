"""Shared benchmark plumbing: timing, FLOP counting, appending results to BENCHMARKS.md."""

from __future__ import annotations

import datetime as dt
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
NEURAL_ENGINE = {"motion": "liveportrait", "lipsync": "wav2lip", "restore": "gfpgan"}


def build_engine(stage: str, engine: str, weights: Path | None, device: str, batch_size: int,
                 paste_mask: str = "auto", warm: bool = True):
    """The stage's engine exactly as ``talkinghead serve STAGE`` builds it (``warm``: and
    warms it up, as a server does before it reports SERVING)."""
    from talkinghead.services.common.server import ServerSettings
    from talkinghead.services.lipsync.server import load_lipsync_engine
    from talkinghead.services.motion.server import load_motion_engine
    from talkinghead.services.restore.server import load_restore_engine

    settings = ServerSettings(stage=stage, port=0, engine=engine, device=device,
                              weights_dir=weights, batch_size=batch_size, paste_mask=paste_mask)
    loader = {"motion": load_motion_engine, "lipsync": load_lipsync_engine,
              "restore": load_restore_engine}[stage]
    built = loader(settings)
    if warm and hasattr(built, "warmup"):
        built.warmup()
    return built


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call, counted by torch's FlopCounterMode (multiply-add = 2 FLOPs)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def time_call(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Median seconds of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return samples[len(samples) // 2]


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
        path.write_text("# Benchmarks\n\nFigures appended by the scripts in bench/; each section "
                        "names the command that produced it.\n\n")
    with path.open("a") as fh:
        fh.write("\n".join(lines) + "\n")
