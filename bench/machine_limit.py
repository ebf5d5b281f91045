"""The machine's own limit, measured: what the networks' achieved FLOP/s is a share of.

Two kernels the networks are made of: a large square matmul (the best case for any BLAS)
and a 3x3 convolution at a typical decoder shape (where most of our FLOPs are). Each in
fp32, and in bf16/fp16 where the device runs them natively (CUDA; bf16 on CPUs that have
it). Run in the same process as the figures it normalises, since these machines are shared.
FLOPs are counted the direct way (2 x multiply-adds); a backend that uses Winograd for 3x3
convolutions (oneDNN does) shows more than the matmul peak: that is the effective limit our
convolutions can reach.

    python -m bench.machine_limit [--device auto] [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from talkinghead.services.common.device import resolve_device


@dataclass(frozen=True)
class Peak:
    kernel: str
    dtype: str
    tflops: float  # 1e12 FLOP/s achieved


def _rate(fn, flops: float, device: str, seconds: float) -> float:
    """Best FLOP/s over repeated calls for about ``seconds`` (best: the machine's ability,
    not its noise)."""
    fn()  # warm-up: allocation, kernel selection
    best, deadline = 0.0, time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        best = max(best, flops / elapsed)
        if time.perf_counter() > deadline:
            return best


def dtypes_for(device: str) -> list[torch.dtype]:
    if device == "cuda":
        return [torch.float32, torch.bfloat16, torch.float16]
    if device == "mps":
        return [torch.float32, torch.float16]
    return [torch.float32, torch.bfloat16]


def measure(device: str = "cpu", seconds: float = 1.0, size: int | None = None) -> list[Peak]:
    """Matmul and 3x3-conv peaks per dtype. ``size`` shrinks the problems (smoke runs)."""
    n = size or (8192 if device == "cuda" else 2048)
    spatial, channels = (max(8, (size or 64) // 32), 64) if size else (64, 256)
    peaks = []
    for dtype in dtypes_for(device):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        x = torch.randn(4, channels, spatial, spatial, device=device, dtype=dtype)
        w = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype)
        conv_flops = 2.0 * 4 * channels * channels * 9 * spatial * spatial
        with torch.inference_mode():
            matmul = _rate(lambda a=a, b=b: a @ b, 2.0 * n**3, device, seconds)
            conv = _rate(lambda x=x, w=w: F.conv2d(x, w, padding=1), conv_flops, device, seconds)
        name = str(dtype).removeprefix("torch.")
        peaks += [Peak("matmul", name, matmul / 1e12), Peak("conv3x3", name, conv / 1e12)]
    return peaks


def table(peaks: list[Peak]) -> list[str]:
    rows = ["| kernel | dtype | TFLOP/s |", "|---|---|---:|"]
    rows += [f"| {p.kernel} | {p.dtype} | {p.tflops:.3f} |" for p in peaks]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    device = resolve_device(args.device)
    print("\n".join(table(measure(device, args.seconds))))


if __name__ == "__main__":
    main()
