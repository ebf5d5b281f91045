"""The benchmark harness runs (tiny problems, a fraction of a second): not a speed test."""

from __future__ import annotations

from bench.machine_limit import measure, table


def test_machine_limit_measures_every_kernel_and_dtype():
    peaks = measure("cpu", seconds=0.05, size=64)
    assert {(p.kernel, p.dtype) for p in peaks} == {
        ("matmul", "float32"), ("conv3x3", "float32"),
        ("matmul", "bfloat16"), ("conv3x3", "bfloat16"),
    }
    assert all(p.tflops > 0 for p in peaks)
    assert len(table(peaks)) == 2 + len(peaks)
