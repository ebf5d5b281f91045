"""GFPGAN speed options on the bare network, uncontended, with their error vs fp32.

Each option is kept only if it is faster and holds the reference tolerance (5e-4); the
answers are in BENCHMARKS.md.

    python -m bench.restore_options [--compile]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch

from bench.common import time_call
from talkinghead.services.restore import gfpgan_weights as gw
from talkinghead.services.restore.gfpgan_engine import to_channels_last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compile", action="store_true", help="also torch.compile (~1 min)")
    args = parser.parse_args()
    weights = Path(tempfile.mkdtemp(prefix="bench-gfpgan-"))
    gw.write_deterministic_checkpoints(weights, "talkinghead-a")
    net, _ = gw.load_restorer(weights)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 512, 512) * 2 - 1
    with torch.inference_mode():
        reference = net(x).image
        variants = {
            "fp32": lambda: net(x).image,
            "channels_last": (lambda m: lambda: m(
                x.contiguous(memory_format=torch.channels_last)).image)(
                to_channels_last(copy.deepcopy(net))),
            "bf16 autocast": lambda: _bf16(net, x),
        }
        if args.compile:
            compiled = torch.compile(net)
            compiled(x)  # the compile itself, outside the timing
            variants["torch.compile"] = lambda: compiled(x).image
        print("| option | s / face | max abs diff vs fp32 |\n|---|---:|---:|")
        for name, fn in variants.items():
            seconds = time_call(fn, repeats=2)
            diff = (fn().float() - reference).abs().max().item()
            print(f"| {name} | {seconds:.2f} | {diff:.2g} |", flush=True)


def _bf16(net, x):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return net(x).image.float()


if __name__ == "__main__":
    main()
