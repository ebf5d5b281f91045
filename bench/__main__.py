"""One command for the benchmarks: ``python -m bench`` on the current device.

Runs, in one process so that every figure is taken under the same conditions, each part
(``--only PART,...`` picks some; all by default):
  limit     the machine's limit: matmul and 3x3 convolution per dtype (bench/machine_limit.py)
  networks  every network per frame against that limit (bench/networks.py)
  served    each stage as served over gRPC, with the time outside the networks broken out
            (bench/served_stages.py)
  replicas  restore (the bottleneck) through 1 and 2 served replicas, each pinned to its
            own core (bench/restore.py)
  cost      restore per output frame: GFPGAN, the face parser and the rest, for the exact
            and the presenter paste mask, eager and compiled, and when compile pays back
            (bench/restore.py)
  options   restore's speed options (--bf16 or --half, channels_last, --compile with
            --compile) and paste masks against the default: seconds per face or frame and
            the difference from the fp32 output (bench/restore.py)
  job       a whole job at each of --seconds of audio, ours cold and warm and the seed
            pipeline's way, seconds per stage and the ratios; with two lengths each job is
            fitted as fixed + per-frame seconds and given at 90 s (bench/whole_job.py,
            bench/seed_way.py)
  profile   the warm path's time outside the networks, profiled (bench/warm_profile.py)
  musetalk  MuseTalk per output frame (presenter frames cached) against Wav2Lip + GFPGAN +
            its parser: FLOPs, and ms through the engines (bench/musetalk.py; needs
            talkinghead[musetalk]; writes MuseTalk's 3.4 GB deterministic files)
  lite      each lite engine as served, on the CPU (the fallbacks that need no weights)
  memory    peak memory of one render against audio length, lite engines (bench/memory.py)
  load      many jobs at once through Celery workers and restore replicas, lite engines
            (bench/load.py; needs Redis: TALKINGHEAD_BENCH_REDIS, default db 13 on the local
            one, flushed; skipped with a message where none answers)
It prints one table per part and appends them, with date, device and command, to
BENCHMARKS.md. Neural engines on deterministic checkpoints in the official layout (cost
does not depend on weight values). ``--smoke`` checks the harness in about two minutes:
tiny kernels, FLOPs on the meta device, the lite engines and 1-2 s of audio for the served
stages, the whole job, the profile and the memory part; its figures say nothing about speed
and are never written.

    python -m bench [--device auto] [--seconds 90 | --seconds 1,2] [--only PART,...] [--smoke]
                    [--no-write]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench import (
    load,
    machine_limit,
    memory,
    networks,
    restore,
    seed_way,
    served_stages,
    warm_profile,
    whole_job,
)
from bench.common import append_markdown
from talkinghead.services.common.device import resolve_device


def smoke(device: str) -> list[str]:
    """Every part of the harness on tiny problems: the tables it would print."""
    cases = networks.network_cases(networks.loaded_networks(None, "meta"), "meta")
    flops = {case.name: networks.flops_per_frame(case) / 1e9 for case in cases}
    real = networks.network_cases(_cheap_networks(device), device)
    limit, rows, peaks = networks.limit_and_networks(
        device, [c for c in real if flops[c.name] < 10], [1], repeats=1, size=64)
    lines = machine_limit.table(peaks) + [""] + networks.table(rows, limit.tflops, limit.spread)
    batch = served_batch(device)
    served = served_stages.measure("lite", None, device, {"motion": 4, "lipsync": 8,
                                                          "restore": 4}, batch)
    job, _ = whole_job.measure(SMOKE_SECONDS, "lite", None, device, batch)
    warm = warm_profile.profile_warm_path(None, device, 4, 3, engine="lite", cheap_frames=8)
    peak = memory.measure([1.0])
    return (lines + [""] + served_stages.table(served) + [""] + whole_job.table(job) + [""]
            + warm_profile.table(warm) + [""] + memory.table(peak))


PARTS = ("limit", "networks", "served", "replicas", "cost", "options", "job", "profile", "lite",
         "memory", "load", "musetalk")
LITE_PARTS = {"limit", "lite", "memory", "load"}  # need no checkpoints
STATISTIC = ("Every figure is the median of `--repeats` samples taken in interleaved rounds (each "
             "kernel and network once per round), with the spread (slowest − fastest) / median.")
SMOKE_SECONDS = [1.0, 2.0]  # two lengths: the fit is exercised too


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


def _demo_photo():
    """The demo photo as RGB: the size of the motion clip's frames the seed's S3FD sees."""
    from importlib import resources

    from talkinghead.services.common.video_files import read_image

    return read_image(Path(str(resources.files("talkinghead.assets.demo") / "face.jpg")))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"parts, comma-separated (default: all): {','.join(PARTS)}")
    parser.add_argument("--batches", default="1,4", help="networks: batch sizes tried")
    parser.add_argument("--repeats", type=int, default=5,
                        help="interleaved samples per network and limit kernel (median shown)")
    parser.add_argument("--seconds", default="90",
                        help="audio length(s) of the whole job, e.g. 1,2: with two lengths "
                        "each job is fitted as fixed + per-frame seconds and given at 90 s")
    parser.add_argument("--restore-replicas", type=int, default=1,
                        help="restore servers in the whole job")
    parser.add_argument("--no-seed", action="store_true",
                        help="whole job: ours only, not the seed's way")
    parser.add_argument("--served-frames", default="4,64,4",
                        help="served: frames for motion, lipsync, restore")
    parser.add_argument("--replica-frames", type=int, default=8,
                        help="replicas: frames through the replicas")
    parser.add_argument("--options-frames", type=int, default=2,
                        help="options: frames per sample of the paste-mask rows")
    parser.add_argument("--cost-frames", type=int, default=6,
                        help="cost: output frames per sample (made from 3 motion frames)")
    parser.add_argument("--pinned-replicas", type=int, default=2,
                        help="job: also a warm job with this many restore replicas pinned "
                        "one per core (0: not run)")
    parser.add_argument("--job-musetalk", action="store_true",
                        help="job: also MuseTalk as the lipsync engine with restore off "
                        "(needs talkinghead[musetalk]; writes its 3.4 GB deterministic files)")
    parser.add_argument("--compile", action="store_true",
                        help="options: also time torch.compile (compiled at warm-up, minutes "
                        "on a CPU)")
    parser.add_argument("--lite-frames", default="125,100,100",
                        help="lite: frames for motion, lipsync, restore")
    parser.add_argument("--memory-seconds", default="30,120",
                        help="memory: audio lengths (s), each rendered in a fresh process")
    parser.add_argument("--load", default="20,2,2,1",
                        help="load: jobs, workers, restore replicas, stream limit per server")
    parser.add_argument("--weights", type=Path,
                        help="checkpoints folder (default: deterministic ones, written here)")
    parser.add_argument("--smoke", action="store_true", help="check the harness in seconds")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; do not append to BENCHMARKS.md")
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
        weights = args.weights or (networks.write_weights(Path(tmp)) if parts - LITE_PARTS
                                   else Path(tmp))
        for title, lines, notes, on in sections(args, parts, device, weights):
            print(f"\n## {title}\n" + "\n".join(lines), flush=True)
            if not args.no_write:
                append_markdown("bench", title, lines, on, notes)


def sections(args: argparse.Namespace, parts: set[str], device: str, weights: Path):
    """(title, table lines, notes, the device it ran on) per part, each yielded as soon as
    it is measured."""
    batch = served_batch(device)
    if "networks" in parts:
        cases = networks.network_cases(networks.loaded_networks(weights, device), device)
        limit, rows, peaks = networks.limit_and_networks(
            device, cases, [int(b) for b in args.batches.split(",")], args.repeats)
        if "limit" in parts:
            yield "The machine's limit", machine_limit.table(peaks), [STATISTIC], device
        yield ("Every network, per frame, against the machine's limit",
               networks.table(rows, limit.tflops, limit.spread),
               [f"Share of {limit.tflops:.3f} TFLOP/s, the best fp32 kernel of the limit, "
                "timed in the same interleaved rounds as the networks.", STATISTIC], device)
    elif "limit" in parts:
        yield ("The machine's limit", machine_limit.table(machine_limit.measure(device, args.repeats)),
               [STATISTIC], device)
    if "served" in parts:
        frames = dict(zip(served_stages.STAGES, (int(n) for n in args.served_frames.split(",")),
                          strict=True))
        rows = served_stages.measure("neural", weights, device, frames, batch)
        yield ("Each stage as served, and where the time goes", served_stages.table(rows),
               [served_stages.NOTE, f"Batch sizes: {batch}."], device)
    if "replicas" in parts and (os.cpu_count() or 1) >= 2:
        yield ("Restore through served replicas",
               restore.replica_table(weights, args.replica_frames), [restore.REPLICAS_NOTE],
               device)
    if "musetalk" in parts:
        from bench import musetalk

        yield ("MuseTalk against Wav2Lip + GFPGAN, FLOPs per output frame",
               musetalk.flop_table(musetalk.flop_rows()), [musetalk.NOTE], device)
        from talkinghead.services.lipsync import musetalk_weights

        if not (weights / musetalk_weights.FILES["unet"]).is_file():
            musetalk_weights.write_deterministic_checkpoints(weights, "talkinghead-a")
        yield ("MuseTalk against Wav2Lip + GFPGAN, ms per output frame",
               musetalk.time_table(musetalk.time_rows(weights, device)),
               ["Through the engines, 6 output frames from 3 motion frames, the presenter "
                "caches filled by a first pass; one timed pass."], device)
    if "cost" in parts:
        rows = restore.restore_cost(weights, device, batch["restore"], args.repeats,
                                    out_frames=args.cost_frames)
        yield ("Restore per output frame: the paste masks, and compile",
               restore.cost_table(rows),
               [restore.COST_NOTE.format(weight=restore.RESTORE_WEIGHT, frames=args.cost_frames,
                                         motion=3, batch=batch["restore"]), STATISTIC], device)
    if "options" in parts:
        rows = restore.measure_options(weights, device, args.repeats, args.options_frames,
                                       batch["restore"], args.compile)
        yield ("Restore options against the default", restore.options_table(rows),
               [restore.OPTIONS_NOTE, STATISTIC], device)
        diff = restore.mask_mode_difference(weights, device)
        yield ("The presenter paste mask against the exact one",
               restore.mask_difference_table(diff),
               [restore.MASK_DIFF_NOTE.format(**diff)], device)
    if "job" in parts:
        lengths = sorted(float(x) for x in args.seconds.split(","))
        rows, inside = whole_job.measure(lengths, "neural", weights, device, batch,
                                         args.restore_replicas, with_seed=not args.no_seed,
                                         pinned_replicas=args.pinned_replicas,
                                         musetalk=args.job_musetalk)
        shown = " and ".join(f"{s:g}" for s in lengths)
        yield (f"A whole job of {shown} s of audio: ours against the seed's way",
               whole_job.table(rows), whole_job.notes(lengths, args.restore_replicas, batch),
               device)
        if inside:
            costs = seed_way.s3fd_postprocessing_costs(weights, _demo_photo(), device)
            yield ("The seed's detectors, inside its steps", whole_job.seed_details_table(
                inside, costs), [seed_way.S3FD_NOTE], device)
    if "profile" in parts:
        profile = warm_profile.profile_warm_path(weights, device, 8, 6)
        yield ("Warm path: time outside the networks", warm_profile.table(profile),
               [warm_profile.NOTE], device)
    yield from lite_sections(args, parts)


def lite_sections(args: argparse.Namespace, parts: set[str]):
    """The parts on the lite engines, on the CPU whatever ``--device`` says."""
    if "lite" in parts:
        frames = dict(zip(served_stages.STAGES, (int(n) for n in args.lite_frames.split(",")),
                          strict=True))
        rows = served_stages.measure("lite", None, "cpu", frames, served_batch("cpu"))
        yield ("Each lite stage as served", served_stages.table(rows),
               [served_stages.NOTE, "Lite engines: classical image processing, no networks."],
               "cpu")
    if "memory" in parts:
        lengths = [float(s) for s in args.memory_seconds.split(",")]
        yield ("Peak memory against audio length (lite engines)",
               memory.table(memory.measure(lengths)), [memory.NOTE], "cpu")
    if "load" in parts:
        url = load.redis_url()
        if url is None:
            print("\nload: skipped, no Redis at TALKINGHEAD_BENCH_REDIS "
                  "(default redis://127.0.0.1:6379/13)", flush=True)
            return
        jobs, workers, replicas, streams = (int(n) for n in args.load.split(","))
        report = load.measure(url, jobs, workers, replicas, streams)
        yield ("Load: jobs submitted at once (lite engines)", load.table(report), [load.NOTE],
               "cpu")


if __name__ == "__main__":
    main()
