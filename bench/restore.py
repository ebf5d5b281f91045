"""GFPGAN restore cost: the network per speed option and batch, the whole enhance path the
official way vs ours, and throughput with 1 and 2 replicas pinned to separate cores.

Deterministic weights in the official layout (cost does not depend on weight values).

    python -m bench.restore [--batches 1,4,8] [--frames 8] [--compile] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import append_markdown, count_flops, time_call
from talkinghead.services.common.device import resolve_device
from talkinghead.services.common.frames import FaceGeometry, VideoFrame
from talkinghead.services.restore import face_align as fa
from talkinghead.services.restore import gfpgan_weights as gw
from talkinghead.services.restore.gfpgan_engine import GFPGANEngine


def demo_frame(size: tuple[int, int] = (720, 1280)) -> tuple[np.ndarray, np.ndarray]:
    """A 720p frame with the demo face in it, and its five landmarks."""
    from importlib import resources

    import cv2

    from talkinghead.services.common.face_detection import largest_face

    demo = resources.files("talkinghead.assets.demo")
    photo = cv2.cvtColor(cv2.imread(str(demo / "face.jpg")), cv2.COLOR_BGR2RGB)
    frame = np.zeros((*size, 3), np.uint8)
    frame[100:612, 300:812] = photo
    face = largest_face(frame)
    return frame, np.asarray(face.landmarks, np.float64)


def network_rows(engine: GFPGANEngine, batches: list[int], compile_: bool) -> list[tuple]:
    options = [("fp32", {}), ("channels_last", {"channels_last": True})]
    if engine.device == "cpu" and torch.backends.mkldnn.is_available():
        options.append(("bf16 autocast", {"bf16_cpu": True}))
    if engine.device in ("cuda", "mps"):
        options.append(("fp16", {"half": True}))
    import copy

    from talkinghead.services.restore.gfpgan_engine import to_channels_last

    rows = []
    base = engine.restorer
    for name, opts in options:
        engine.restorer = base
        engine.channels_last = opts.get("channels_last", False)
        engine.bf16_cpu = opts.get("bf16_cpu", False)
        if engine.channels_last:
            engine.restorer = to_channels_last(copy.deepcopy(base))
        if opts.get("half"):
            engine.restorer = copy.deepcopy(base).half()
        for batch in batches:
            x = torch.rand(batch, 3, 512, 512, device=engine.device) * 2 - 1
            if opts.get("half"):
                x = x.half()
            with torch.inference_mode():
                seconds = time_call(lambda x=x: engine.run_network(x), repeats=2)
            rows.append((name, batch, batch / seconds))
            print(f"{name:<14} batch {batch}: {batch / seconds:.3f} faces/s", flush=True)
    engine.restorer, engine.channels_last, engine.bf16_cpu = base, False, False
    if compile_:
        compiled = torch.compile(base)
        for batch in batches:
            x = torch.rand(batch, 3, 512, 512, device=engine.device) * 2 - 1
            with torch.inference_mode():
                compiled(x)  # compile outside the timing
                seconds = time_call(lambda x=x: compiled(x), repeats=2, warmup=0)
            rows.append(("torch.compile", batch, batch / seconds))
    return rows


def official_way(engine: GFPGANEngine, frame: np.ndarray, landmarks: np.ndarray) -> float:
    """One frame as GFPGANer.enhance does it: detect, align, restore, parse, paste (seconds).

    Only that path is timed: the landmarks are found beforehand (RetinaFace's are
    meaningless with deterministic weights, so the detector runs for its cost and its boxes
    are dropped, and the crop uses the given landmarks)."""
    from talkinghead.services.restore.face_parsing import parse
    from talkinghead.services.restore.face_tensors import face_to_input, output_to_face
    from talkinghead.services.restore.retinaface_detect import detect

    if engine.detector is None or engine.parser is None:
        raise RuntimeError("the official way needs RetinaFace's and the face parser's files")
    start = time.perf_counter()
    with torch.inference_mode():
        detect(engine.detector, frame, "rgb")  # every frame, full size
        matrix = fa.alignment_matrix(landmarks)
        crop = fa.warp_face(frame, matrix, "rgb")
        face = output_to_face(engine.restorer(face_to_input(crop, "rgb")).image, "rgb")[0]
        classes = parse(engine.parser, face, "rgb")[0]
        fa.paste_face(frame, face, fa.inverse_matrix(matrix), classes)
    return time.perf_counter() - start


def replica_throughput(weights: Path, frame: np.ndarray, landmarks: np.ndarray, frames: int,
                       replicas: int) -> float:
    """Frames/s through RestoreFanout with ``replicas`` servers, one core each."""
    from talkinghead.local_stack import LocalStack, cli_command, free_port
    from talkinghead.orchestrator.restore_fanout import RestoreFanout
    from talkinghead.orchestrator.stage_clients import open_channel, wait_for_serving

    box = (*landmarks.min(axis=0), *landmarks.max(axis=0))
    face = FaceGeometry(box=tuple(float(v) for v in box), landmarks=landmarks.astype(np.float32))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--no-replicas", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    batches = [int(b) for b in args.batches.split(",")]
    weights = Path(tempfile.mkdtemp(prefix="bench-gfpgan-"))
    gw.write_deterministic_checkpoints(weights, "talkinghead-a")
    engine = GFPGANEngine(weights, device, batch_size=max(batches))
    frame, landmarks = demo_frame()

    with torch.inference_mode():
        face_flops = count_flops(lambda: engine.restorer(torch.zeros(1, 3, 512, 512)))
        parse_flops = count_flops(lambda: engine.parser(torch.zeros(1, 3, 512, 512)))
    net = network_rows(engine, batches, args.compile)

    box = (*landmarks.min(axis=0), *landmarks.max(axis=0))
    face = FaceGeometry(box=tuple(float(v) for v in box), landmarks=landmarks.astype(np.float32))
    official = official_way(engine, frame, landmarks)
    n = args.frames
    ours = {}
    for mask in ("parse", "square"):
        engine.use_parser = mask == "parse"
        start = time.perf_counter()
        engine.restore([VideoFrame(i, frame, face) for i in range(n)], weight=1.0)
        ours[mask] = (time.perf_counter() - start) / n

    table = [f"GFPGAN {face_flops / 1e9:.0f} GFLOPs per face; face parser {parse_flops / 1e9:.0f} "
             "GFLOPs per face.", "", "| network option | batch | faces / s |", "|---|---:|---:|"]
    table += [f"| {name} | {batch} | {fps:.3f} |" for name, batch, fps in net]
    table += ["", "| enhance path, 1280x720 frame, one face | s / frame | ratio to official |",
              "|---|---:|---:|",
              f"| official way: RetinaFace on the frame, align, restore, parse mask, one frame "
              f"at a time | {official:.2f} | 1.00 |",
              f"| ours: geometry given, batch {max(batches)}, parse mask (official) | "
              f"{ours['parse']:.2f} | {official / ours['parse']:.2f} |",
              f"| ours: geometry given, batch {max(batches)}, square mask | {ours['square']:.2f} | "
              f"{official / ours['square']:.2f} |"]
    if not args.no_replicas and (os.cpu_count() or 1) >= 2:
        one = replica_throughput(weights, frame, landmarks, n, 1)
        two = replica_throughput(weights, frame, landmarks, n, 2)
        table += ["", "| restore replicas (one core each, parse mask) | frames / s | speed-up |",
                  "|---|---:|---:|", f"| 1 | {one:.3f} | 1.00 |", f"| 2 | {two:.3f} | {two / one:.2f} |"]
    print("\n".join(table))
    if not args.no_write:
        append_markdown("bench.restore", "GFPGAN restore: options, enhance path, replicas", table,
                        device, ["Deterministic weights; the machine's two cores are shared."])


if __name__ == "__main__":
    main()
