"""One command for the benchmarks: ``python -m bench`` on the current device.

Runs, in one process so that every figure is taken under the same conditions:
  1. the machine's limit (bench/machine_limit.py)
  2. every network per frame against that limit (bench/networks.py)
  3. restore (the bottleneck) through 1 and 2 served replicas, each pinned to its own core
prints one table per part and appends them, with date, device and command, to
BENCHMARKS.md. ``--smoke`` checks the harness in seconds (tiny kernels, FLOPs counted on the
meta device, only the cheapest networks timed): its figures say nothing about speed and
are never written.

Not yet here (issue #7): the other stages as served, a whole job cold and warm, the seed
pipeline's way in the same run, the warm-path profile. Until then see the separate
scripts: bench.lipsync, bench.restore, bench.memory, bench.load, bench.lite_and_compositor.

    python -m bench [--device auto] [--batches 1,4] [--smoke] [--no-write]
"""

from __future__ import annotations

import argparse
import os

from bench import machine_limit, networks
from bench.common import append_markdown
from talkinghead.services.common.device import resolve_device


def smoke(device: str) -> list[str]:
    """Every part of the harness on tiny problems: the tables it would print."""
    peaks = machine_limit.measure(device, seconds=0.05, size=64)
    cases = networks.network_cases(networks.loaded_networks(None, "meta"), "meta")
    flops = {case.name: networks.flops_per_frame(case) / 1e9 for case in cases}
    real = networks.network_cases(_cheap_networks(device), device)
    rows = networks.measure([c for c in real if flops[c.name] < 10], [1], repeats=1, flops=flops)
    limit = max(p.tflops for p in peaks if p.dtype == "float32")
    return machine_limit.table(peaks) + [""] + networks.table(rows, limit)


def _cheap_networks(device: str) -> dict:
    """Freshly initialised networks on ``device`` where they are cheap to build, meta where
    not (those are only FLOP-counted in a smoke run)."""
    from talkinghead.services.lipsync.networks.wav2lip import Wav2Lip
    from talkinghead.services.motion.networks.stitching_retargeting import build_mlps

    nets = networks.loaded_networks(None, "meta")
    nets["wav2lip"] = Wav2Lip().to(device).eval()
    nets["stitching"] = build_mlps()[0].to(device).eval()
    return nets


def replica_table(frames: int) -> list[str]:
    """Frames/s with 1 and 2 restore replicas (one core each): how restore scales out."""
    import tempfile
    from pathlib import Path

    from bench.restore import demo_frame, replica_throughput
    from talkinghead.services.restore import gfpgan_weights

    frame, landmarks = demo_frame()
    with tempfile.TemporaryDirectory() as tmp:
        gfpgan_weights.write_deterministic_checkpoints(Path(tmp), "talkinghead-a")
        one = replica_throughput(Path(tmp), frame, landmarks, frames, 1)
        two = replica_throughput(Path(tmp), frame, landmarks, frames, 2)
    return ["| restore replicas (one core each) | frames / s | speed-up |", "|---|---:|---:|",
            f"| 1 | {one:.3f} | 1.00 |", f"| 2 | {two:.3f} | {two / one:.2f} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="check the harness in seconds")
    parser.add_argument("--replica-frames", type=int, default=8)
    parser.add_argument("--no-replicas", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.smoke:
        print("\n".join(smoke(device)))
        return
    peaks = machine_limit.measure(device)
    limit = max(p.tflops for p in peaks if p.dtype == "float32")
    rows = networks.measure(networks.network_cases(networks.deterministic_networks(device), device),
                            [int(b) for b in args.batches.split(",")], args.repeats)
    sections = [
        ("The machine's limit", machine_limit.table(peaks), []),
        ("Every network, per frame, against the machine's limit", networks.table(rows, limit),
         [f"Share of {limit:.3f} TFLOP/s, the best fp32 kernel of the limit above."]),
    ]
    if not args.no_replicas and (os.cpu_count() or 1) >= 2:
        sections.append(("Restore through served replicas", replica_table(args.replica_frames),
                         ["GFPGAN on deterministic weights, 1280x720 frames with face geometry "
                          "given, parse-mask paste-back, chunks of 4 over the replicas."]))
    for title, lines, notes in sections:
        print(f"\n## {title}\n" + "\n".join(lines))
        if not args.no_write:
            append_markdown("bench", title, lines, device, notes)


if __name__ == "__main__":
    main()
