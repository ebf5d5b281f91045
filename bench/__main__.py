"""One command for the benchmarks: ``python -m bench`` on the current device.

Runs, in one process so that every figure is taken under the same conditions:
  1. the machine's limit (bench/machine_limit.py)
  2. every network per frame against that limit (bench/networks.py)
  3. each stage as served over gRPC, with the time outside the networks broken out
     (bench/served_stages.py)
  4. restore (the bottleneck) through 1 and 2 served replicas, each pinned to its own core
  5. a whole job of ``--seconds`` of audio, ours cold and warm and the seed pipeline's way,
     seconds per stage and the ratios (bench/whole_job.py, bench/seed_way.py)
  6. the warm path's time outside the networks, profiled (bench/warm_profile.py)
prints one table per part and appends them, with date, device and command, to
BENCHMARKS.md. Neural engines on deterministic checkpoints in the official layout (cost
does not depend on weight values). ``--smoke`` checks the whole harness in seconds: tiny
kernels, FLOPs on the meta device, the lite engines and 2 s of audio for the served stages
and the whole job; its figures say nothing about speed and are never written.

    python -m bench [--device auto] [--seconds 90] [--only PART,...] [--smoke] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench import machine_limit, networks, served_stages, warm_profile, whole_job
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
    lines = machine_limit.table(peaks) + [""] + networks.table(rows, limit)
    batch = served_batch(device)
    served = served_stages.measure("lite", None, device, {"motion": 4, "lipsync": 8,
                                                          "restore": 4}, batch)
    job = whole_job.measure(SMOKE_SECONDS, "lite", None, device, batch)
    warm = warm_profile.profile_warm_path(None, device, 4, 3, engine="lite", cheap_frames=8)
    return (lines + [""] + served_stages.table(served) + [""]
            + whole_job.table(job, SMOKE_SECONDS) + [""] + warm_profile.table(warm))


PARTS = ("limit", "networks", "served", "replicas", "job", "profile")
SMOKE_SECONDS = 2.0


def served_batch(device: str) -> dict[str, int]:
    """Batch sizes as served. On a CPU the large generators (LivePortrait's W and G, GFPGAN,
    ParseNet) run fastest one frame at a time (the networks table; BENCHMARKS.md "Restore
    options") and Wav2Lip's small generator peaks near 16; on a GPU batches fill the device
    (the servers' default, 8; not measured here)."""
    if device == "cpu":
        return {"motion": 1, "lipsync": 16, "restore": 1}
    return {"motion": 8, "lipsync": 64, "restore": 8}


def _cheap_networks(device: str) -> dict:
    """Freshly initialised networks on ``device`` where they are cheap to build, meta where
    not (those are only FLOP-counted in a smoke run)."""
    from talkinghead.services.lipsync.networks.wav2lip import Wav2Lip
    from talkinghead.services.motion.networks.stitching_retargeting import build_mlps

    nets = networks.loaded_networks(None, "meta")
    nets["wav2lip"] = Wav2Lip().to(device).eval()
    nets["stitching"] = build_mlps()[0].to(device).eval()
    return nets


def replica_table(weights: Path, frames: int) -> list[str]:
    """Frames/s with 1 and 2 restore replicas (one core each): how restore scales out."""
    from bench.restore import demo_frame, replica_throughput

    frame, landmarks = demo_frame()
    one = replica_throughput(weights, frame, landmarks, frames, 1)
    two = replica_throughput(weights, frame, landmarks, frames, 2)
    return ["| restore replicas (one core each) | frames / s | speed-up |", "|---|---:|---:|",
            f"| 1 | {one:.3f} | 1.00 |", f"| 2 | {two:.3f} | {two / one:.2f} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", default=",".join(PARTS), help=f"parts: {','.join(PARTS)}")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=90.0,
                        help="audio length of the whole job (scaled to 90 s when shorter)")
    parser.add_argument("--restore-replicas", type=int, default=1,
                        help="restore servers in the whole job")
    parser.add_argument("--no-seed", action="store_true",
                        help="whole job: ours only, not the seed's way")
    parser.add_argument("--served-frames", default="4,64,4",
                        help="frames for motion, lipsync, restore as served")
    parser.add_argument("--replica-frames", type=int, default=8)
    parser.add_argument("--weights", type=Path,
                        help="checkpoints folder (default: deterministic ones, written here)")
    parser.add_argument("--smoke", action="store_true", help="check the harness in seconds")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.smoke:
        print("\n".join(smoke(device)))
        return
    parts = set(args.only.split(","))
    unknown = parts - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}; choose from {','.join(PARTS)}")
    with tempfile.TemporaryDirectory(prefix="bench-weights-") as tmp:
        weights = args.weights or networks.write_weights(Path(tmp))
        for title, lines, notes in sections(args, parts, device, weights):
            print(f"\n## {title}\n" + "\n".join(lines), flush=True)
            if not args.no_write:
                append_markdown("bench", title, lines, device, notes)


def sections(args: argparse.Namespace, parts: set[str], device: str, weights: Path):
    """(title, table lines, notes) per part, each yielded as soon as it is measured."""
    batch = served_batch(device)
    peaks = machine_limit.measure(device)
    limit = max(p.tflops for p in peaks if p.dtype == "float32")
    if "limit" in parts:
        yield "The machine's limit", machine_limit.table(peaks), []
    if "networks" in parts:
        rows = networks.measure(
            networks.network_cases(networks.loaded_networks(weights, device), device),
            [int(b) for b in args.batches.split(",")], args.repeats)
        yield ("Every network, per frame, against the machine's limit",
               networks.table(rows, limit),
               [f"Share of {limit:.3f} TFLOP/s, the best fp32 kernel of the limit above."])
    if "served" in parts:
        frames = dict(zip(served_stages.STAGES, (int(n) for n in args.served_frames.split(",")),
                          strict=True))
        rows = served_stages.measure("neural", weights, device, frames, batch)
        yield ("Each stage as served, and where the time goes", served_stages.table(rows),
               [served_stages.NOTE, f"Batch sizes: {batch}."])
    if "replicas" in parts and (os.cpu_count() or 1) >= 2:
        yield ("Restore through served replicas", replica_table(weights, args.replica_frames),
               ["GFPGAN on deterministic weights, 1280x720 frames with face geometry "
                "given, parse-mask paste-back, chunks of 4 over the replicas."])
    if "job" in parts:
        rows = whole_job.measure(args.seconds, "neural", weights, device, batch,
                                 args.restore_replicas, with_seed=not args.no_seed)
        yield (f"A whole job of {args.seconds:g} s of audio: ours against the seed's way",
               whole_job.table(rows, args.seconds),
               whole_job.notes(args.seconds, args.restore_replicas, batch))
    if "profile" in parts:
        profile = warm_profile.profile_warm_path(weights, device, 8, 6)
        yield ("Warm path: time outside the networks", warm_profile.table(profile),
               [warm_profile.NOTE])


if __name__ == "__main__":
    main()
