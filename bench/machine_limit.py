"""The machine's own limit, measured: what the networks' achieved FLOP/s is a share of.

Two kernels the networks are made of: a large square matmul (the best case for any BLAS)
and a 3x3 convolution at a typical decoder shape (where most of our FLOPs are). Each in
fp32, and in bf16/fp16 where the device runs them natively (CUDA; bf16 on CPUs that have
it). Run in the same process, and in the same interleaved rounds, as the figures it
normalises (bench.common.interleaved_timings: median of at least 5 samples, spread shown),
since these machines are shared.
FLOPs are counted the direct way (2 x multiply-adds); a backend that uses Winograd for 3x3
convolutions (oneDNN does) shows more than the matmul peak: that is the effective limit our
convolutions can reach. The part ``limit`` of ``python -m bench``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.common import interleaved_timings

# A kernel sample lasts at least this long (the kernel repeated within it): a single 2048²
# matmul is ~40 ms here, too short for one clock reading to be a fair sample.
MIN_SAMPLE_SECONDS = 0.2


@dataclass(frozen=True)
class Peak:
    kernel: str
    dtype: str
    tflops: float  # 1e12 FLOP/s at the median sample
    spread: float = 0.0  # (slowest − fastest) / median of the samples


def dtypes_for(device: str) -> list[torch.dtype]:
    if device == "cuda":
        return [torch.float32, torch.bfloat16, torch.float16]
    if device == "mps":
        return [torch.float32, torch.float16]
    return [torch.float32, torch.bfloat16]


def kernel_calls(device: str = "cpu", size: int | None = None
                 ) -> dict[tuple[str, str], tuple[Callable[[], object], float]]:
    """(kernel, dtype) → (one call, its FLOPs). ``size`` shrinks the problems (smoke runs)."""
    n = size or (8192 if device == "cuda" else 2048)
    spatial, channels = (max(8, (size or 64) // 32), 64) if size else (64, 256)
    calls = {}
    for dtype in dtypes_for(device):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        x = torch.randn(4, channels, spatial, spatial, device=device, dtype=dtype)
        w = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype)
        name = str(dtype).removeprefix("torch.")
        calls[("matmul", name)] = (_no_grad(lambda a=a, b=b: a @ b), 2.0 * n**3)
        calls[("conv3x3", name)] = (_no_grad(lambda x=x, w=w: F.conv2d(x, w, padding=1)),
                                    2.0 * 4 * channels * channels * 9 * spatial * spatial)
    return calls


def _no_grad(fn: Callable[[], object]) -> Callable[[], object]:
    def call() -> object:
        with torch.inference_mode():
            return fn()
    return call


def peaks_from(calls: dict[tuple[str, str], tuple[Callable[[], object], float]],
               timings: dict) -> list[Peak]:
    """Peaks from the kernels' timings (the same statistic as every network's figure)."""
    return [Peak(kernel, dtype, flops / timings[(kernel, dtype)].median / 1e12,
                 timings[(kernel, dtype)].spread)
            for (kernel, dtype), (_, flops) in calls.items()]


def measure(device: str = "cpu", repeats: int = 5, size: int | None = None,
            min_sample_seconds: float = MIN_SAMPLE_SECONDS) -> list[Peak]:
    """Matmul and 3x3-conv FLOP/s per dtype: median of ``repeats`` interleaved samples."""
    calls = kernel_calls(device, size)
    timings = interleaved_timings({key: fn for key, (fn, _) in calls.items()}, repeats,
                                  min_sample_seconds=min_sample_seconds)
    return peaks_from(calls, timings)


def table(peaks: list[Peak]) -> list[str]:
    rows = ["| kernel | dtype | TFLOP/s (median) | spread |", "|---|---|---:|---:|"]
    rows += [f"| {p.kernel} | {p.dtype} | {p.tflops:.3f} | {100 * p.spread:.0f} % |" for p in peaks]
    return rows
