"""A whole job, ours and the seed's way, in one run: seconds per stage and the ratio.

Ours: the three model servers as real processes on loopback (the neural engines on the
weights given), the orchestrator's ``render_video`` in this process, three times:
  cold         empty motion-clip cache: the presenter's clip is rendered
  warm         the same face and template again: the clip comes from the cache
  warm, no restore
The seed's way: bench/seed_way.py (a fresh process per stage, detection on every frame,
loop and re-encode between stages, restore one frame at a time).

Our stages stream into each other, so their seconds overlap: for lipsync, restore and
compose the table gives the moment each one's last frame was done, counted from the
start of the streamed part. Audio is the demo speech repeated to ``seconds``; where that
is short of 90 s, the per-frame part of every figure is also scaled to 90 s (marked).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from bench.common import NEURAL_ENGINE
from talkinghead.orchestrator.pipeline import RenderResult

TARGET_SECONDS = 90.0


@dataclass
class JobFigures:
    """One whole job: fixed seconds (paid once per job) and per-frame seconds by stage."""

    name: str
    frames: int
    stages: dict[str, float]  # stage -> seconds, as measured
    fixed: dict[str, float] = field(default_factory=dict)  # stage -> seconds that do not scale
    total: float = 0.0

    def scaled_total(self, frames: int) -> float:
        """The total for ``frames`` frames: fixed parts as they are, the rest per frame."""
        fixed = sum(self.fixed.values())
        return fixed + (self.total - fixed) * frames / self.frames


def speech_of_length(seconds: float, out: Path) -> Path:
    """The demo speech repeated (or cut) to ``seconds``, as a 16 kHz WAV."""
    from talkinghead.services.common.audio import SAMPLE_RATE, decode_audio_file, write_wav

    speech = decode_audio_file(resources.files("talkinghead.assets.demo") / "speech.wav")
    n = int(round(seconds * SAMPLE_RATE))
    write_wav(out, np.resize(speech, n).astype(np.float32))
    return out


def demo_spec(audio: Path, output: Path, restore: bool, restore_chunk_frames: int = 16):
    import json

    from talkinghead.orchestrator.jobspec import JobCard, JobSpec, RenderOptions

    demo = resources.files("talkinghead.assets.demo")
    card = JobCard(**json.loads((demo / "card.json").read_text()))
    return JobSpec(face=Path(str(demo / "face.jpg")), audio=audio, card=card, output=output,
                   options=RenderOptions(restore=restore,
                                         restore_chunk_frames=restore_chunk_frames))


@contextlib.contextmanager
def our_servers(engine: str, weights: Path | None, device: str, batch: dict[str, int],
                restore_replicas: int, pinned: bool = False) -> Iterator:
    """Motion, lipsync and restore servers as processes on loopback: their targets.
    ``pinned``: restore replica i on core i with one thread (bench.restore's replica set-up)."""
    from talkinghead.local_stack import LocalStack

    args = {stage: ["--device", device, "--batch-size", str(b)] for stage, b in batch.items()}
    if engine == "neural":  # each stage's network by name: never a silent lite fallback
        args = {stage: [*a, "--engine", NEURAL_ENGINE[stage]] for stage, a in args.items()}
    if weights is not None:
        args = {stage: [*a, "--weights", str(weights)] for stage, a in args.items()}
    cpu_sets = {}
    if pinned:
        args["restore"] = [*args["restore"], "--threads", "1"]
        cpu_sets = {f"restore-{i}": str(i) for i in range(restore_replicas)}
    with tempfile.TemporaryDirectory() as logs:
        stack = LocalStack(Path(logs), engine=engine, restore_replicas=restore_replicas,
                           server_args=args, cpu_sets=cpu_sets)
        with stack:
            yield stack.targets


def ours(targets, audio: Path, work: Path, label: str, restore: bool, cache,
         restore_chunk_frames: int = 16) -> JobFigures:
    """One render through the served stages; the figures of its RenderResult."""
    from talkinghead.orchestrator.pipeline import render_video

    spec = demo_spec(audio, work / f"ours-{label}.mp4", restore, restore_chunk_frames)
    result: RenderResult = render_video(spec, targets, cache=cache, serving_timeout=600)
    s = result.stage_seconds
    stages = {"validate": s["validate"], "motion": s["motion"]}
    stages.update({k.removesuffix("_done_at"): v for k, v in s.items() if k.endswith("_done_at")})
    # Fixed per job: validation and the motion clip (its length is the template's, not the
    # audio's); the streamed part grows with the frames.
    return JobFigures(label, result.frames, stages,
                      fixed={"validate": s["validate"], "motion": s["motion"]}, total=s["total"])


def seed(face: Path, audio: Path, weights: Path | None, work: Path, engine: str,
         device: str) -> tuple[JobFigures, JobFigures]:
    """The seed's way with restore, and (its restore step left out) without."""
    from bench.seed_way import run_seed_way

    run = run_seed_way(face, audio, "talking", weights, work, restore=True, engine=engine,
                       device=device)
    frames = _frame_count(audio)
    stages = {k: v for k, v in run.seconds.items() if k != "total"}
    fixed = {k: v for k, v in run.fixed_seconds.items()}
    with_restore = JobFigures("seed way", frames, stages, fixed, run.seconds["total"])
    # Every step is its own process reading the previous step's file, so without restore
    # the job is the same steps minus that one (compose reads the lipsync file instead).
    no_restore = JobFigures(
        "seed way, no restore", frames, {k: v for k, v in stages.items() if k != "restore"},
        {k: v for k, v in fixed.items() if k != "restore"},
        run.seconds["total"] - stages["restore"])
    return with_restore, no_restore


def _frame_count(audio: Path, fps: float = 25.0) -> int:
    from talkinghead.orchestrator.schedule import output_frame_count
    from talkinghead.services.common.audio import SAMPLE_RATE, decode_audio_file

    return output_frame_count(len(decode_audio_file(audio)) / SAMPLE_RATE, fps)


def measure(seconds: float, engine: str, weights: Path | None, device: str,
            batch: dict[str, int], restore_replicas: int = 1,
            with_seed: bool = True, pinned_replicas: int = 2) -> list[JobFigures]:
    """Ours cold, warm, warm without restore, warm with ``pinned_replicas`` restore
    replicas each on its own core (where the machine has the cores); the seed's way with
    and without restore."""
    import os

    from talkinghead.orchestrator.motion_cache import MotionClipCache

    # The stage deadlines are sized for production hardware; a CPU benchmark of neural
    # engines runs far slower per audio second, and must not be cut short by them.
    os.environ.setdefault("TALKINGHEAD_STAGE_TIMEOUT_BASE_SECONDS", "21600")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-job-") as tmp:
        work = Path(tmp)
        audio = speech_of_length(seconds, work / "speech.wav")
        cache = MotionClipCache(work / "motion-cache")
        with our_servers(engine, weights, device, batch, restore_replicas) as targets:
            for label, restore in (("ours, cold", True), ("ours, warm", True),
                                   ("ours, warm, no restore", False)):
                start = time.perf_counter()
                rows.append(ours(targets, audio, work, label, restore, cache))
                print(f"{label}: {time.perf_counter() - start:.1f} s {rows[-1].stages}",
                      flush=True)
        cores = os.cpu_count() or 1
        if pinned_replicas >= 2 and cores >= pinned_replicas:
            # one more video of the now cached presenter, restore scaled out over replicas
            label = f"ours, warm, {pinned_replicas} restore replicas (pinned)"
            # Chunks small enough to share a short job evenly (a 90 s job has ~140 chunks
            # of the default 16; 50 frames in 16s would leave one replica 32 of them).
            chunk = max(1, min(16, _frame_count(audio) // (8 * pinned_replicas)))
            with our_servers(engine, weights, device, batch, pinned_replicas,
                             pinned=True) as targets:
                start = time.perf_counter()
                rows.append(ours(targets, audio, work, label, True, cache, chunk))
                print(f"{label}: {time.perf_counter() - start:.1f} s", flush=True)
        if with_seed:
            face = Path(str(resources.files("talkinghead.assets.demo") / "face.jpg"))
            seed_work = work / "seed"
            seed_work.mkdir()
            rows += seed(face, audio, weights, seed_work, engine, device)
            print(f"seed way: {rows[-2].stages}", flush=True)
    return rows


def notes(seconds: float, restore_replicas: int, batch: dict[str, int]) -> list[str]:
    lines = [
        f"Audio: the demo speech repeated to {seconds:g} s; 25 fps; the demo photo (512x512) "
        "and card; `talking` template (125 frames at 25 fps). Neural engines on deterministic "
        f"checkpoints; ours with {restore_replicas} restore replica(s), batch sizes {batch}.",
        "Ours: stages stream into each other, so lipsync / restore / compose give the moment "
        "each finished its last frame, counted from the start of the stream (compose is then "
        "the streamed part's length). Seed way: each step's own wall seconds, one after the "
        "other (a process each: start-up and model load included).",
        "Seed way without restore: the same run's steps less the restore step (each step is "
        "its own process reading the previous step's file, so the others do not change).",
        "Marginal cost of one more video of an already-rendered presenter: the warm rows "
        "(with one restore replica on every core, and with replicas pinned one per core, "
        "one thread each, restore chunks of at most frames / (8 x replicas) so that a "
        "short job is shared evenly, as a long one is with the default 16).",
    ]
    if seconds < TARGET_SECONDS:
        lines.append(
            f"(scaled): {seconds:g} s of audio measured; the 90 s figures keep each job's fixed "
            "part (ours: validation and the motion clip; the seed's: its motion step and each "
            "step's start-up to model loaded) and scale the rest by frames, 90 / "
            f"{seconds:g}. They are estimates, marked as such.")
    return lines


STAGE_ORDER = ("validate", "motion", "loop", "lipsync", "restore", "compose")


def table(rows: list[JobFigures], seconds: float, fps: float = 25.0) -> list[str]:
    """Seconds per stage per job, totals, the totals scaled to 90 s, and ours against the seed."""
    scale = seconds < TARGET_SECONDS
    target_frames = int(round(TARGET_SECONDS * fps))
    head = "| job | " + " | ".join(STAGE_ORDER) + " | total s |"
    head += " total s, scaled to 90 s (scaled) |" if scale else ""
    lines = [head, "|---|" + "---:|" * (len(STAGE_ORDER) + 1 + scale)]
    for r in rows:
        cells = [f"{r.stages[s]:.1f}" if s in r.stages else "" for s in STAGE_ORDER]
        line = f"| {r.name} | " + " | ".join(cells) + f" | {r.total:.1f} |"
        if scale:
            line += f" {r.scaled_total(target_frames):.0f} |"
        lines.append(line)
    by_name = {r.name: r for r in rows}
    pairs = [("ours, cold", "seed way"), ("ours, warm", "seed way"),
             ("ours, warm, no restore", "seed way, no restore")]
    pairs += [(r.name, "seed way") for r in rows if "replicas (pinned)" in r.name]
    pairs = [(a, b) for a, b in pairs if a in by_name and b in by_name]
    if pairs:
        lines += ["", "| ours | against | speed-up, as measured | speed-up at 90 s"
                  + (" (scaled)" if scale else "") + " |", "|---|---|---:|---:|"]
        for a, b in pairs:
            ra, rb = by_name[a], by_name[b]
            measured = rb.total / ra.total
            at_90 = rb.scaled_total(target_frames) / ra.scaled_total(target_frames)
            lines.append(f"| {a} | {b} | {measured:.2f}x | {at_90:.2f}x |")
    return lines
