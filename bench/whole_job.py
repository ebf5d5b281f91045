"""A whole job, ours and the seed's way, in one run: seconds per stage and the ratio.

Ours: the three model servers as real processes on loopback (the neural engines on the
weights given), the orchestrator's ``render_video`` in this process:
  cold         empty motion-clip cache: the presenter's clip is rendered (the longest length
               only, first, so that every motion frame a warm job uses has been through the
               replicas once: its paste mask and lipsync face inputs are cached, as they are
               for a presenter's second video)
  warm         the same face and template again: the clip comes from the cache
  warm, no restore
  warm, K restore replicas pinned one per core (where the machine has the cores)
The seed's way: bench/seed_way.py (a fresh process per stage, detection on every frame,
loop and re-encode between stages, restore one frame at a time).

Our stages stream into each other, so their seconds overlap: for lipsync, restore and
compose the table gives the moment each one's last frame was done, counted from the
start of the streamed part. Audio is the demo speech repeated to each length asked for.

A 90 s video costs too long to render on a CPU, so the job is measured at two lengths and
each job's total is fitted as fixed + per-frame seconds through both measurements (shown
beside the fit): nothing is assumed about which part of a job is fixed. Two parts are
carried over instead of measured again, because their inputs hold no audio: the seed's
motion step at the second length is the first length's (same photo and template), and our
cold job at 90 s is the warm fit plus the cold-minus-warm seconds measured at the longest
length (the motion clip, and the presenter caches of the motion frames that length uses).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from bench.common import NEURAL_ENGINE
from talkinghead.orchestrator.pipeline import RenderResult

TARGET_SECONDS = 90.0


@dataclass
class JobFigures:
    """One whole job at one audio length: seconds per stage, as measured, and the total."""

    name: str
    seconds: float  # audio length
    frames: int
    stages: dict[str, float]
    total: float = 0.0


@dataclass(frozen=True)
class Fit:
    """A job's total as fixed + per-frame seconds, through its measurements at two lengths."""

    fixed: float
    per_frame: float

    def at(self, frames: int) -> float:
        return self.fixed + self.per_frame * frames

    @staticmethod
    def through(a: JobFigures, b: JobFigures) -> Fit:
        per_frame = (b.total - a.total) / (b.frames - a.frames)
        return Fit(a.total - per_frame * a.frames, per_frame)


def fits(rows: list[JobFigures]) -> dict[str, Fit]:
    """Each job measured at two lengths → its fit; "ours, cold" (measured at one length)
    → the warm fit plus the cold − warm seconds measured there."""
    by_name: dict[str, list[JobFigures]] = {}
    for row in rows:
        by_name.setdefault(row.name, []).append(row)
    out = {}
    for name, runs in by_name.items():
        lengths = sorted({r.frames for r in runs})
        if len(lengths) >= 2:
            short = next(r for r in runs if r.frames == lengths[0])
            long = next(r for r in runs if r.frames == lengths[-1])
            out[name] = Fit.through(short, long)
    if "ours, cold" in by_name and "ours, warm" in out:
        cold = by_name["ours, cold"][0]
        warm = next((r for r in by_name["ours, warm"] if r.frames == cold.frames), None)
        if warm is not None:
            base = out["ours, warm"]
            out["ours, cold"] = Fit(base.fixed + cold.total - warm.total, base.per_frame)
    return {name: out[name] for name in by_name if name in out}  # in the order measured


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
                restore_replicas: int, pinned: bool = False,
                engines: dict[str, str] | None = None) -> Iterator:
    """Motion, lipsync and restore servers as processes on loopback: their targets.
    ``pinned``: restore replica i on core i with one thread (bench.restore's replica set-up).
    ``engines``: a stage's engine other than its first neural one (lipsync: musetalk)."""
    from talkinghead.local_stack import LocalStack

    args = {stage: ["--device", device, "--batch-size", str(b)] for stage, b in batch.items()}
    if engine == "neural":  # each stage's network by name: never a silent lite fallback
        chosen = {**NEURAL_ENGINE, **(engines or {})}
        args = {stage: [*a, "--engine", chosen[stage]] for stage, a in args.items()}
    if weights is not None:
        args = {stage: [*a, "--weights", str(weights)] for stage, a in args.items()}
    cpu_sets = {}
    if pinned:
        args["restore"] = [*args["restore"], "--threads", "1"]
        cpu_sets = {f"restore-{i}": str(i) for i in range(restore_replicas)}
    with tempfile.TemporaryDirectory() as logs:
        # "neural" is no --engine value: each stage's own engine name comes after it in args
        stack = LocalStack(Path(logs), engine="auto" if engine == "neural" else engine,
                           restore_replicas=restore_replicas,
                           server_args=args, cpu_sets=cpu_sets)
        with stack:
            yield stack.targets


def ours(targets, audio: Path, seconds: float, work: Path, label: str, restore: bool, cache,
         restore_chunk_frames: int = 16) -> JobFigures:
    """One render through the served stages; the figures of its RenderResult."""
    from talkinghead.orchestrator.pipeline import render_video

    spec = demo_spec(audio, work / f"ours-{label}-{seconds:g}s.mp4", restore,
                     restore_chunk_frames)
    result: RenderResult = render_video(spec, targets, cache=cache, serving_timeout=600)
    s = result.stage_seconds
    stages = {"validate": s["validate"], "motion": s["motion"]}
    stages.update({k.removesuffix("_done_at"): v for k, v in s.items() if k.endswith("_done_at")})
    return JobFigures(label, seconds, result.frames, stages, total=s["total"])


def seed(face: Path, audio: Path, seconds: float, weights: Path | None, work: Path,
         engine: str, device: str, motion_from=None) -> tuple[JobFigures, JobFigures, object]:
    """The seed's way with restore, and (its restore step left out) without; and its run,
    whose motion clip a later length reuses."""
    from bench.seed_way import run_seed_way

    run = run_seed_way(face, audio, "talking", weights, work, restore=True, engine=engine,
                       device=device, motion_from=motion_from)
    frames = _frame_count(audio)
    stages = {k: v for k, v in run.seconds.items() if k != "total"}
    with_restore = JobFigures("seed way", seconds, frames, stages, run.seconds["total"])
    # Every step is its own process reading the previous step's file, so without restore
    # the job is the same steps minus that one (compose reads the lipsync file instead).
    no_restore = JobFigures(
        "seed way, no restore", seconds, frames,
        {k: v for k, v in stages.items() if k != "restore"},
        run.seconds["total"] - stages["restore"])
    return with_restore, no_restore, run


def _frame_count(audio: Path, fps: float = 25.0) -> int:
    from talkinghead.orchestrator.schedule import output_frame_count
    from talkinghead.services.common.audio import SAMPLE_RATE, decode_audio_file

    return output_frame_count(len(decode_audio_file(audio)) / SAMPLE_RATE, fps)


@dataclass
class SeedDetails:
    """What the seed's steps measured inside themselves, per audio length."""

    seconds: float
    frames: int
    details: dict[str, float]


def measure(lengths: list[float], engine: str, weights: Path | None, device: str,
            batch: dict[str, int], restore_replicas: int = 1, with_seed: bool = True,
            pinned_replicas: int = 2, musetalk: bool = False
            ) -> tuple[list[JobFigures], list[SeedDetails]]:
    """At each audio length: ours warm, warm without restore, warm with ``pinned_replicas``
    restore replicas each on its own core (where the machine has the cores), the seed's way
    with and without restore; ours cold at the longest length, first (a warm job of a
    length must find every motion frame it uses already seen by the replicas, as a
    presenter's next video does). ``musetalk``: also ours with MuseTalk as the lipsync
    engine and restore off (its files are written into ``weights`` when missing), its first
    job at the longest length and then warm at each length."""
    import os

    from talkinghead.orchestrator.motion_cache import MotionClipCache

    # The stage deadlines are sized for production hardware; a CPU benchmark of neural
    # engines runs far slower per audio second, and must not be cut short by them.
    os.environ.setdefault("TALKINGHEAD_STAGE_TIMEOUT_BASE_SECONDS", "21600")
    # Likewise the cold motion clip (125 LivePortrait frames: over the default 1500 s on a
    # shared 2-core CPU) and the job's soft limit that caps it.
    os.environ.setdefault("TALKINGHEAD_MOTION_TIMEOUT_SECONDS", "21600")
    os.environ.setdefault("TALKINGHEAD_JOB_SECONDS_BASE", "21600")
    rows: list[JobFigures] = []
    inside: list[SeedDetails] = []
    cores = os.cpu_count() or 1
    pinned = pinned_replicas >= 2 and cores >= pinned_replicas
    face = Path(str(resources.files("talkinghead.assets.demo") / "face.jpg"))

    def log(row: JobFigures, began: float) -> None:
        print(f"{row.name} at {row.seconds:g} s: {time.perf_counter() - began:.1f} s "
              f"{ {k: round(v, 1) for k, v in row.stages.items()} }", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-job-") as tmp:
        work = Path(tmp)
        audios = {s: speech_of_length(s, work / f"speech-{s:g}s.wav") for s in lengths}
        cache = MotionClipCache(work / "motion-cache")
        with our_servers(engine, weights, device, batch, restore_replicas) as targets:
            jobs = [("ours, cold", True, lengths[-1])]
            for seconds in lengths:
                jobs += [("ours, warm", True, seconds), ("ours, warm, no restore", False, seconds)]
            for label, restore, seconds in jobs:
                began = time.perf_counter()
                rows.append(ours(targets, audios[seconds], seconds, work, label, restore, cache))
                log(rows[-1], began)
        if pinned:
            label = f"ours, warm, {pinned_replicas} restore replicas (pinned)"
            with our_servers(engine, weights, device, batch, pinned_replicas,
                             pinned=True) as targets:
                for seconds in lengths:
                    # Chunks small enough to share a short job evenly (a 90 s job has ~140
                    # chunks of the default 16; 50 frames in 16s would leave one replica 32).
                    chunk = max(1, min(16, _frame_count(audios[seconds]) // (8 * pinned_replicas)))
                    began = time.perf_counter()
                    rows.append(ours(targets, audios[seconds], seconds, work, label, True,
                                     cache, chunk))
                    log(rows[-1], began)
        if musetalk:
            rows += _musetalk_rows(lengths, audios, weights, device, batch, work, cache, log)
        if with_seed:
            first = None
            for seconds in lengths:
                seed_work = work / f"seed-{seconds:g}s"
                with_restore, no_restore, run = seed(face, audios[seconds], seconds, weights,
                                                     seed_work, engine, device, first)
                first = first or run
                rows += [with_restore, no_restore]
                inside.append(SeedDetails(seconds, with_restore.frames, run.details))
                print(f"seed way at {seconds:g} s: {with_restore.stages}", flush=True)
    return rows, inside


MUSETALK = "ours, warm, MuseTalk, no restore"


def _musetalk_rows(lengths: list[float], audios: dict[float, Path], weights: Path | None,
                   device: str, batch: dict[str, int], work: Path, cache, log
                   ) -> list[JobFigures]:
    """MuseTalk's lipsync server with restore off, on the motion clip the Wav2Lip rows cached:
    a first job at the longest length (MuseTalk's presenter frames encoded), then warm."""
    from talkinghead.services.lipsync import musetalk_weights

    if weights is None:
        raise ValueError("MuseTalk's rows need a weights directory")
    if not (weights / musetalk_weights.FILES["unet"]).is_file():
        musetalk_weights.write_deterministic_checkpoints(weights, "talkinghead-a")
    rows = []
    with our_servers("neural", weights, device, batch, 1,
                     engines={"lipsync": "musetalk"}) as targets:
        jobs = [("ours, first MuseTalk job, no restore", lengths[-1])]
        jobs += [(MUSETALK, seconds) for seconds in lengths]
        for label, seconds in jobs:
            began = time.perf_counter()
            rows.append(ours(targets, audios[seconds], seconds, work, label, False, cache))
            log(rows[-1], began)
    return rows


def notes(lengths: list[float], restore_replicas: int, batch: dict[str, int]) -> list[str]:
    shown = " and ".join(f"{s:g} s" for s in lengths)
    lines = [
        f"Audio: the demo speech repeated to {shown}; 25 fps; the demo photo (512x512) and "
        "card; `talking` template (125 frames at 25 fps). Neural engines on deterministic "
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
    if len(lengths) >= 2:
        lines.append(
            "90 s figures: each job's total fitted as fixed + per-frame seconds through its two "
            "measured totals (both shown). The seed's motion step takes no audio, so the second "
            "length reuses the first length's clip and seconds; ours cold at 90 s is the warm "
            "fit plus cold − warm measured at the longest length (the motion clip, and the "
            "presenter caches of the motion frames it uses; a 90 s video uses all 125, so "
            "this understates a first 90 s video by the other frames' masks and face "
            "inputs). Ours cold runs first, at the longest length: a warm job then finds "
            "every motion frame it uses already seen, as a presenter's next video does.")
    return lines


STAGE_ORDER = ("validate", "motion", "loop", "lipsync", "restore", "compose")
PAIRS = [("ours, cold", "seed way"), ("ours, warm", "seed way"),
         ("ours, warm, no restore", "seed way, no restore"),
         (MUSETALK, "ours, warm"), (MUSETALK, "seed way")]


def table(rows: list[JobFigures], fps: float = 25.0) -> list[str]:
    """Seconds per stage per job and length; with two lengths the fitted 90 s totals; ours
    against the seed at each length and at 90 s."""
    lines = ["| job | audio s | frames | " + " | ".join(STAGE_ORDER) + " | total s |",
             "|---|---:|---:|" + "---:|" * (len(STAGE_ORDER) + 1)]
    for r in rows:
        cells = [f"{r.stages[s]:.1f}" if s in r.stages else "" for s in STAGE_ORDER]
        lines.append(f"| {r.name} | {r.seconds:g} | {r.frames} | " + " | ".join(cells)
                     + f" | {r.total:.1f} |")
    lengths = sorted({r.seconds for r in rows})
    fitted = fits(rows)
    target = int(round(TARGET_SECONDS * fps))
    if fitted:
        lines += ["", "| job | " + " | ".join(f"total at {s:g} s" for s in lengths)
                  + " | fixed s (fit) | s per frame (fit) | 90 s video (fit) |",
                  "|---|" + "---:|" * (len(lengths) + 3)]
        for name, fit in fitted.items():
            totals = {r.seconds: r.total for r in rows if r.name == name}
            cells = [f"{totals[s]:.1f}" if s in totals else "" for s in lengths]
            lines.append(f"| {name} | " + " | ".join(cells)
                         + f" | {fit.fixed:.1f} | {fit.per_frame:.2f} | {fit.at(target):.0f} |")
    names = {r.name for r in rows}
    pairs = PAIRS + [(n, "seed way") for n in sorted(names) if "replicas (pinned)" in n]
    pairs = [(a, b) for a, b in pairs if a in names and b in names]
    if pairs:
        lines += ["", "| ours | against | " + " | ".join(f"speed-up at {s:g} s" for s in lengths)
                  + (" | speed-up at 90 s (fit) |" if fitted else " |"),
                  "|---|---|" + "---:|" * (len(lengths) + bool(fitted))]
        for a, b in pairs:
            cells = []
            for s in lengths:
                ra = next((r for r in rows if r.name == a and r.seconds == s), None)
                rb = next((r for r in rows if r.name == b and r.seconds == s), None)
                cells.append(f"{rb.total / ra.total:.2f}x" if ra and rb else "")
            if fitted:
                cells.append(f"{fitted[b].at(target) / fitted[a].at(target):.2f}x"
                             if a in fitted and b in fitted else "")
            lines.append(f"| {a} | {b} | " + " | ".join(cells) + " |")
    return lines


def seed_details_table(inside: list[SeedDetails], costs: list[tuple[int, float]] | None = None
                       ) -> list[str]:
    """The seed's detectors, measured inside its steps: S3FD's network and post-processing
    apart, RetinaFace; and what S3FD's post-processing costs at other candidate counts."""
    lines = ["| audio s | frames | S3FD network s | S3FD post-processing s (candidates / frame) "
             "| RetinaFace s (network + post-processing) |", "|---:|---:|---:|---:|---:|"]
    for d in inside:
        x = d.details
        lines.append(f"| {d.seconds:g} | {d.frames} | {x.get('lipsync.s3fd_network_s', 0):.1f} "
                     f"| {x.get('lipsync.s3fd_post_s', 0):.2f} "
                     f"({x.get('lipsync.s3fd_candidates', 0):.0f}) "
                     f"| {x.get('restore.retinaface_s', 0):.1f} |")
    if costs:
        lines += ["", "| S3FD candidates in one frame's post-processing | ms |", "|---:|---:|"]
        *stated, every = costs
        lines += [f"| {n} | {1000 * t:.1f} |" for n, t in stated]
        lines.append(f"| {every[0]} (every anchor the deterministic weights pass) "
                     f"| {1000 * every[1]:.1f} |")
    return lines
