"""LivePortrait cost per frame: each network and the whole frame, at real resolution.

Deterministic weights in the official layout (cost does not depend on weight values), on
the current device. Batch 1 and the best of the batches tried; FLOPs per frame beside.

    python -m bench.motion_networks [--device auto] [--batches 1,2,4] [--repeats 2] [--no-write]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.common import append_markdown, count_flops, time_call
from talkinghead.services.common.device import resolve_device
from talkinghead.services.motion import liveportrait_weights as lp
from talkinghead.services.motion.keypoints import KeypointInfo, apply_stitching


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    device = resolve_device(args.device)
    batches = [int(b) for b in args.batches.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        lp.write_deterministic_checkpoints(Path(tmp), "talkinghead-a")
        nets = lp.load_networks(Path(tmp)).to(device)

    torch.manual_seed(0)
    rows = []

    def inputs(batch: int):
        source = torch.rand(batch, 3, 256, 256, device=device)
        with torch.inference_mode():
            info = KeypointInfo.from_heads(nets.motion(source).to(dtype=torch.float32))
            x_s = info.keypoints()
            feature = nets.appearance(source)
            warped = nets.warping(feature, x_s, x_s)
            out = warped.out
        return source, x_s, feature, out

    stages = {
        "appearance F (256 in)": lambda s, x, f, o: nets.appearance(s),
        "motion M (256 in)": lambda s, x, f, o: nets.motion(s),
        "warping W": lambda s, x, f, o: nets.warping(f, x, x),
        "SPADE G (→512)": lambda s, x, f, o: nets.generator(o),
        "stitching MLP": lambda s, x, f, o: apply_stitching(x, x, nets.stitching),
        "frame (W + G + stitching)": lambda s, x, f, o: nets.generator(
            nets.warping(f, x, apply_stitching(x, x, nets.stitching)[0]).out),
    }
    for name, fn in stages.items():
        per_batch = {}
        flops = None
        for batch in batches:
            args_ = inputs(batch)
            with torch.inference_mode():
                if flops is None:
                    flops = count_flops(lambda fn=fn, a=args_: fn(*a)) / batch
                seconds = time_call(lambda fn=fn, a=args_: fn(*a), repeats=args.repeats)
            per_batch[batch] = seconds / batch * 1000
            print(f"{name:<28} batch {batch}: {per_batch[batch]:10.1f} ms/frame", flush=True)
        best = min(per_batch, key=per_batch.get)
        rows.append((name, flops / 1e9, per_batch[batches[0]], best, per_batch[best]))

    table = ["| network | GFLOPs / frame | ms / frame, batch 1 | best batch | ms / frame, best "
             "| GFLOP/s at best |", "|---|---:|---:|---:|---:|---:|"]
    for name, gflops, ms1, best, msb in rows:
        table.append(f"| {name} | {gflops:.2f} | {ms1:.1f} | {best} | {msb:.1f} | "
                     f"{gflops / (msb / 1000):.1f} |")
    print("\n".join(table))
    if not args.no_write:
        append_markdown("bench.motion_networks", "LivePortrait networks, per frame", table,
                        device, ["Whole frame = what every frame of a motion clip costs; F and "
                                 "M run once per source photo."])


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
