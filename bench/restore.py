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
                "difference from the fp32 default's output (GFPGAN's output range is -1..1; "
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
    """Option label → GFPGANEngine keyword arguments, for the options this device runs."""
    options = {"(default: fp32)": {}, "channels_last (no flag)": {"channels_last": True}}
    if device == "cpu" and torch.backends.mkldnn.is_available():
        options["--bf16"] = {"bf16_cpu": True}
    if device in ("cuda", "mps"):
        options["--half"] = {"half": True}
    if with_compile:  # compiled at the warm-up call, outside the timing (a minute on a CPU)
        options["--compile"] = {"compile_network": True}
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
        engine = build_engine("restore", "gfpgan", weights, device, batch, paste_mask=mask)
        calls[f"--paste-mask {mask}"] = (lambda e=engine: e.restore(with_face, RESTORE_WEIGHT))
    timings = interleaved_timings(calls, repeats)
    reference = calls["(default: fp32)"]().float()
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


def mask_mode_difference(weights: Path, device: str, motion_frames: int = 3,
                         out_frames: int = 6) -> dict[str, float]:
    """Largest and mean difference, and share of values that differ, between the exact and
    the presenter paste mask's outputs on the same frames."""
    from talkinghead.orchestrator.schedule import pingpong_schedule

    frame, landmarks = demo_frame()
    rng = np.random.default_rng(0)
    clip = []
    for k in range(motion_frames):
        lm = (landmarks + np.array([3.0 * k, 0.0])).astype(np.float32)
        clip.append((np.roll(frame, 3 * k, axis=1),
                     replace(_geometry(lm), clip_key="bench-diff", clip_frame=k)))
    frames = []
    for i, k in enumerate(pingpong_schedule(motion_frames, out_frames)):
        image, face = clip[k]
        image = image.copy()
        lm = face.landmarks
        x0, x1 = int(lm[3, 0]) - 4, int(lm[4, 0]) + 4
        y0, y1 = int(lm[3:, 1].min()) - 6, int(lm[3:, 1].max()) + 10
        image[y0:y1, x0:x1] = rng.integers(0, 256, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
        frames.append(VideoFrame(i, image, face))
    outputs = {}
    for mask in ("parse", "presenter"):
        engine = build_engine("restore", "gfpgan", weights, device, 2, paste_mask=mask,
                              warm=False)
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
