"""Restore, the bottleneck: its speed options against the default, and its throughput through
served replicas (the parts ``options`` and ``replicas`` of ``python -m bench``).

Options: each of ``talkinghead serve restore``'s speed flags (and channels_last, which the
engine has but no flag turns on) builds its own engine; GFPGAN alone on one 512x512 face is
timed in the same interleaved rounds for all of them, and each one's output is compared
with the fp32 default's (the reference tolerance is 5e-4). The paste masks are timed the
same way through the whole restore path of a 1280x720 frame with its face geometry given,
as the orchestrator sends it. Deterministic weights (cost does not depend on weight values).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from bench.common import Timing, build_engine, interleaved_timings
from talkinghead.services.common.frames import FaceGeometry, VideoFrame

RESTORE_WEIGHT = 0.5  # the job's default (RenderOptions.restore_weight)
OPTIONS_NOTE = ("Each option its own engine, built as `talkinghead serve restore` builds it with "
                "that flag; all timed in the same interleaved rounds, at the served batch. "
                "Network rows: GFPGAN alone on 512x512 faces, per face, with the largest "
                "difference from the fp32 eager network's output (every row eager but "
                "`--compile on`) (GFPGAN's output range is -1..1; "
                "the reference tolerance is 5e-4). Paste-mask rows: the whole restore path "
                "(align, GFPGAN, mask, paste-back) of 1280x720 frames with their face geometry "
                "given, per frame. Speed-up: against the first row of the same work.")
REPLICAS_NOTE = ("GFPGAN on deterministic weights, 1280x720 frames with face geometry given, "
                 "parse-mask paste-back, chunks of 4 over the replicas.")


def demo_frame(size: tuple[int, int] = (720, 1280)) -> tuple[np.ndarray, np.ndarray]:
    """A 720p frame with the demo face in it, and its five landmarks."""
    from importlib import resources

    from talkinghead.services.common.face_detection import largest_face
    from talkinghead.services.common.video_files import read_image

    photo = read_image(Path(str(resources.files("talkinghead.assets.demo") / "face.jpg")))
    frame = np.zeros((*size, 3), np.uint8)
    frame[100:612, 300:812] = photo
    face = largest_face(frame)
    return frame, np.asarray(face.landmarks, np.float64)


def _geometry(landmarks: np.ndarray) -> FaceGeometry:
    box = (*landmarks.min(axis=0), *landmarks.max(axis=0))
    return FaceGeometry(box=tuple(float(v) for v in box), landmarks=landmarks.astype(np.float32))


# ---- options -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptionRow:
    option: str  # as `talkinghead serve restore` is given it
    work: str  # what one sample runs
    per: int  # faces or frames per sample
    timing: Timing
    max_diff: float | None = None  # against the fp32 default's output; None: not compared

    @property
    def seconds(self) -> float:
        return self.timing.median / self.per


def network_options(device: str, with_compile: bool) -> dict[str, dict]:
    """Option label → GFPGANEngine keyword arguments, for the options this device runs.
    All eager (--compile off) but the --compile row: the options are compared on the same
    footing; compile's own section is ``restore_cost``."""
    eager = {"compile_network": "off"}
    options = {"(fp32, eager)": eager,
               "channels_last (no flag)": {"channels_last": True, **eager}}
    if device == "cpu" and torch.backends.mkldnn.is_available():
        options["--bf16"] = {"bf16_cpu": True, **eager}
    if device in ("cuda", "mps"):
        options["--half"] = {"half": True, **eager}
    if with_compile:  # compiled at the warm-up call, outside the timing (a minute on a CPU)
        options["--compile on"] = {"compile_network": "on"}
    return options


def measure_options(weights: Path, device: str, repeats: int, frames: int, batch: int = 1,
                    with_compile: bool = False) -> list[OptionRow]:
    """Every speed option on the bare network at ``batch`` faces (the served batch), and
    both paste masks through the restore path of ``frames`` frames in batches of ``batch``,
    in the same interleaved rounds."""
    from talkinghead.services.restore.gfpgan_engine import GFPGANEngine

    torch.manual_seed(0)
    faces = torch.rand(batch, 3, 512, 512, device=device) * 2 - 1
    engines = {}
    for label, kwargs in network_options(device, with_compile).items():
        engines[label] = GFPGANEngine(weights, device, batch_size=batch, **kwargs)
        engines[label].detector = engines[label].parser = None  # the network alone is timed
        engines[label].warmup()

    def network(engine: GFPGANEngine):
        def call() -> torch.Tensor:
            with torch.inference_mode():
                return engine.run_network(faces.to(engine.dtype))
        return call

    calls = {label: network(engine) for label, engine in engines.items()}
    frame, landmarks = demo_frame()
    # frames made from one motion-clip frame, as the orchestrator sends them: the presenter
    # mode makes the mask at its first call (the warm-up round) and reuses it from then on
    face = replace(_geometry(landmarks), clip_key="bench", clip_frame=0)
    with_face = [VideoFrame(i, frame, face) for i in range(frames)]
    for mask in MASKS:
        engine = build_engine("restore", "gfpgan", weights, device, batch, paste_mask=mask,
                              compile="off")
        calls[f"--paste-mask {mask}"] = (lambda e=engine: e.restore(with_face, RESTORE_WEIGHT))
    timings = interleaved_timings(calls, repeats)
    reference = calls["(fp32, eager)"]().float()
    rows = [OptionRow(label, f"GFPGAN alone, batch {batch}", batch, timings[label],
                      (calls[label]().float() - reference).abs().max().item())
            for label in engines]
    rows += [OptionRow(f"--paste-mask {mask}", f"restore path, 1280x720, batch {batch}", frames,
                       timings[f"--paste-mask {mask}"]) for mask in MASKS]
    return rows


MASKS = ("parse", "presenter", "square")
MASK_DIFF_NOTE = (
    "The same frames through `--paste-mask parse` (the official mask, parsed from each "
    "restored frame) and `--paste-mask presenter` (parsed from the restored face of the "
    "first output frame made from each motion-clip frame, then reused): a presenter clip of "
    "{motion} motion frames (the demo face moved 3 px per frame), ping-pong looped to "
    "{frames} 1280x720 output frames, each with its own mouth (noise over the mouth, as a "
    "stand-in for lipsync's), weight 1. Differences in counts (0..255) over every value of "
    "every output frame. On the deterministic weights the suite writes (no official "
    "checkpoints here) the parser's classes are not a real face's, so these figures bound "
    "the effect of parsing another frame rather than show it on a real face.")


def presenter_video(motion_frames: int, out_frames: int, clip_key: str) -> list[VideoFrame]:
    """A presenter's video as restore receives it: a clip of ``motion_frames`` (the demo face
    in a 1280x720 frame, moved 3 px per clip frame, each with its geometry and motion-frame
    identity) ping-pong looped to ``out_frames``, each with its own mouth (noise over the
    mouth, a stand-in for lipsync's)."""
    from talkinghead.orchestrator.schedule import pingpong_schedule

    frame, landmarks = demo_frame()
    rng = np.random.default_rng(0)
    clip = []
    for k in range(motion_frames):
        lm = (landmarks + np.array([3.0 * k, 0.0])).astype(np.float32)
        clip.append((np.roll(frame, 3 * k, axis=1),
                     replace(_geometry(lm), clip_key=clip_key, clip_frame=k)))
    frames = []
    for i, k in enumerate(pingpong_schedule(motion_frames, out_frames)):
        image, face = clip[k]
        image = image.copy()
        lm = face.landmarks
        x0, x1 = int(lm[3, 0]) - 4, int(lm[4, 0]) + 4
        y0, y1 = int(lm[3:, 1].min()) - 6, int(lm[3:, 1].max()) + 10
        image[y0:y1, x0:x1] = rng.integers(0, 256, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
        frames.append(VideoFrame(i, image, face))
    return frames


def mask_mode_difference(weights: Path, device: str, motion_frames: int = 3,
                         out_frames: int = 6) -> dict[str, float]:
    """Largest and mean difference, and share of values that differ, between the exact and
    the presenter paste mask's outputs on the same frames."""
    frames = presenter_video(motion_frames, out_frames, "bench-diff")
    outputs = {}
    for mask in ("parse", "presenter"):
        engine = build_engine("restore", "gfpgan", weights, device, 2, paste_mask=mask,
                              warm=False, compile="off")
        outputs[mask] = np.stack([f.image for f in engine.restore(frames, 1.0)]).astype(int)
    diff = np.abs(outputs["parse"] - outputs["presenter"])
    return {"motion": motion_frames, "frames": out_frames, "max": float(diff.max()),
            "mean": float(diff.mean()), "changed": float((diff > 0).mean())}


def mask_difference_table(d: dict[str, float]) -> list[str]:
    return ["| paste masks compared | frames | max abs diff (counts) | mean abs diff (counts) "
            "| values that differ |", "|---|---:|---:|---:|---:|",
            f"| presenter vs parse | {d['frames']:.0f} | {d['max']:.0f} | {d['mean']:.4f} "
            f"| {100 * d['changed']:.3f} % |"]


def options_table(rows: list[OptionRow]) -> list[str]:
    """s per face or frame, the spread, the speed-up over the first row of the same work and
    the largest difference from the fp32 default."""
    lines = ["| option (`talkinghead serve restore`) | work | s / face or frame | spread "
             "| speed-up | max abs diff vs fp32 |", "|---|---|---:|---:|---:|---:|"]
    first: dict[str, float] = {}
    for r in rows:
        base = first.setdefault(r.work, r.seconds)
        diff = "" if r.max_diff is None else f"{r.max_diff:.2g}"
        lines.append(f"| {r.option} | {r.work} | {r.seconds:.3f} | {100 * r.timing.spread:.0f} % "
                     f"| {base / r.seconds:.2f}x | {diff} |")
    return lines


# ---- restore's cost per frame: where it goes, and what compile and the mask cache save ----

COST_NOTE = (
    "Each row its own engine (`talkinghead serve restore --paste-mask M --compile C`), all "
    "timed in the same interleaved rounds: the restore path (align, GFPGAN, mask, paste-back, "
    "weight {weight}) of a presenter's video, {frames} 1280x720 output frames made from "
    "{motion} motion-clip frames (ping-pong), in batches of {batch}, with their face geometry "
    "given, as the orchestrator sends them. Presenter rows are steady state: the replica "
    "restored the same presenter before, so every mask is cached (in a presenter's first 90 s "
    "video with a 125-frame clip, 125 of 2250 frames are parsed). GFPGAN and parser columns: "
    "seconds inside those networks over the same calls; the rest: per-frame work outside "
    "them (crop warp, conversions, mask blur and warp, blend). Compile: seconds of the "
    "warm-up batch that compiled the network: the first with an empty inductor cache (a "
    "replica's first start on a machine), the second in the same process (its graphs "
    "cached).")


@dataclass(frozen=True)
class CostRow:
    mask: str
    compiled: bool
    frames: int  # per sample
    timing: Timing  # one restore call over the frames, per sample
    gfpgan_s: float  # per frame, over every timed call
    parser_s: float
    total_s: float
    compile_s: float  # the warm-up's compile (0: eager)

    @property
    def rest_s(self) -> float:
        return self.total_s - self.gfpgan_s - self.parser_s


class _Stopwatch:
    """Seconds spent inside a wrapped callable (cuda synchronised at each end)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.seconds += time.perf_counter() - start
                self.calls += 1
        return timed


def restore_cost(weights: Path, device: str, batch: int, repeats: int, motion_frames: int = 3,
                 out_frames: int = 6) -> list[CostRow]:
    """Per output frame: GFPGAN, the face parser and the rest, for the exact and the
    presenter mask, eager and compiled, in the same interleaved rounds."""
    import os

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-inductor-")
    frames = presenter_video(motion_frames, out_frames, "bench-cost")
    calls, watches, engines = {}, {}, {}
    for compiled in (False, True):
        for mask in ("parse", "presenter"):
            key = (mask, compiled)
            engine = build_engine("restore", "gfpgan", weights, device, batch, paste_mask=mask,
                                  compile="on" if compiled else "off")
            network, parser, total = _Stopwatch(), _Stopwatch(), _Stopwatch()
            engine.run_network = network.wrap(engine.run_network)
            engine.parser.forward = parser.wrap(engine.parser.forward)
            engine.restore(frames, RESTORE_WEIGHT)  # the presenter's earlier video: masks made
            network.seconds = parser.seconds = 0.0
            engines[key], watches[key] = engine, (network, parser, total)
            calls[key] = total.wrap(lambda e=engine: e.restore(frames, RESTORE_WEIGHT))
    timings = interleaved_timings(calls, repeats)
    rows = []
    for key, (network, parser, total) in watches.items():
        per = total.calls * len(frames)  # every timed call, the warm-up round's included
        rows.append(CostRow(key[0], key[1], len(frames), timings[key], network.seconds / per,
                            parser.seconds / per, total.seconds / per,
                            engines[key].compile_seconds))
    return rows


def cost_table(rows: list[CostRow]) -> list[str]:
    lines = ["| paste mask | compile | ms / frame | spread | GFPGAN | face parser | the rest "
             "| compile s at warm-up |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        compile_s = f"{r.compile_s:.0f}" if r.compiled else ""
        lines.append(f"| {r.mask} | {'on' if r.compiled else 'off'} "
                     f"| {1000 * r.timing.median / r.frames:.0f} | {100 * r.timing.spread:.0f} % "
                     f"| {1000 * r.gfpgan_s:.0f} | {1000 * r.parser_s:.0f} "
                     f"| {1000 * r.rest_s:.0f} | {compile_s} |")
    by = {(r.mask, r.compiled): r for r in rows}
    lines += ["", "| paste mask | eager → compiled, ms / frame | saved per frame | compile s "
              "| pays back after | exact mode (parse, eager) → this |",
              "|---|---:|---:|---:|---:|---:|"]
    exact = by[("parse", False)].timing.median / by[("parse", False)].frames
    for mask in ("parse", "presenter"):
        eager, compiled = by[(mask, False)], by[(mask, True)]
        e, c = (x.timing.median / x.frames for x in (eager, compiled))
        saved = e - c
        frames = compiled.compile_s / saved if saved > 0 else float("inf")
        payback = (f"{frames:.0f} frames ({frames / 25:.1f} s of 25 fps video)"
                   if saved > 0 else "never")
        lines.append(f"| {mask} | {1000 * e:.0f} → {1000 * c:.0f} | {1000 * saved:.0f} ms "
                     f"| {compiled.compile_s:.0f} | {payback} | {exact / c:.2f}x |")
    return lines


# ---- replicas ------------------------------------------------------------------------------


def replica_throughput(weights: Path, frame: np.ndarray, landmarks: np.ndarray, frames: int,
                       replicas: int) -> float:
    """Frames/s through RestoreFanout with ``replicas`` servers, one core each."""
    from talkinghead.local_stack import LocalStack, cli_command, free_port
    from talkinghead.orchestrator.restore_fanout import RestoreFanout
    from talkinghead.orchestrator.stage_clients import open_channel, wait_for_serving

    face = _geometry(landmarks)
    with tempfile.TemporaryDirectory() as logs:
        stack = LocalStack(Path(logs), engine="gfpgan")
        targets = []
        try:
            for core in range(replicas):
                port = free_port()
                stack._spawn(f"restore-{core}", ["taskset", "-c", str(core), *cli_command(
                    "serve", "restore", "--port", str(port), "--engine", "gfpgan", "--weights",
                    str(weights), "--batch-size", "4", "--metrics-port", "0", "--threads", "1")],
                    env={"OMP_NUM_THREADS": "1"})
                targets.append(f"127.0.0.1:{port}")
            for target in targets:
                channel = open_channel(target)
                wait_for_serving(channel, "restore", target, 300)
                channel.close()
            fanout = RestoreFanout(targets, "bench", chunk_frames=4, weight=1.0)
            start = time.perf_counter()
            n = sum(1 for _ in fanout.restore(VideoFrame(i, frame, face) for i in range(frames)))
            return n / (time.perf_counter() - start)
        finally:
            stack.stop()


def replica_table(weights: Path, frames: int) -> list[str]:
    """Frames/s with 1 and 2 restore replicas (one core each): how restore scales out."""
    frame, landmarks = demo_frame()
    one = replica_throughput(weights, frame, landmarks, frames, 1)
    two = replica_throughput(weights, frame, landmarks, frames, 2)
    return ["| restore replicas (one core each) | frames / s | speed-up |", "|---|---:|---:|",
            f"| 1 | {one:.3f} | 1.00 |", f"| 2 | {two:.3f} | {two / one:.2f} |"]
