"""The benchmark harness runs (tiny problems, lite engines: seconds): not a speed test."""

from __future__ import annotations

from bench.machine_limit import measure, table


def test_machine_limit_measures_every_kernel_and_dtype():
    peaks = measure("cpu", repeats=2, size=64, min_sample_seconds=0.01)
    assert {(p.kernel, p.dtype) for p in peaks} == {
        ("matmul", "float32"), ("conv3x3", "float32"),
        ("matmul", "bfloat16"), ("conv3x3", "bfloat16"),
    }
    assert all(p.tflops > 0 and p.spread >= 0 for p in peaks)
    assert len(table(peaks)) == 2 + len(peaks)


def test_timings_are_interleaved_rounds_with_median_and_spread():
    """One statistic for the limit and the networks: each call once per round, repeats
    rounds; the median and (slowest - fastest) / median of the samples."""
    from bench.common import Timing, interleaved_timings

    order: list[str] = []
    timings = interleaved_timings({"a": lambda: order.append("a"),
                                   "b": lambda: order.append("b")}, repeats=5)
    assert order[-10:] == ["a", "b"] * 5  # after the warm-up calls: round-robin
    assert all(len(t.samples) == 5 for t in timings.values())
    t = Timing((1.0, 3.0, 2.0, 2.0, 10.0))
    assert t.median == 2.0 and t.spread == 4.5


def test_every_network_case_builds_its_inputs_and_counts_its_flops():
    """On the meta device: no weights, no compute, every case's shapes and FLOPs."""
    from bench.networks import flops_per_frame, loaded_networks, network_cases

    cases = network_cases(loaded_networks(None, "meta"), "meta")
    gflops = {case.name: flops_per_frame(case) / 1e9 for case in cases}
    assert len(cases) == 10
    # the figures DESIGN.md quotes for the official architectures, within 10 %
    assert abs(gflops["Wav2Lip generator"] - 7.9) < 0.8
    assert abs(gflops["GFPGANv1Clean (512)"] - 396) < 40
    assert abs(gflops["ParseNet (512)"] - 469) < 47
    assert abs(gflops["S3FD (640x360)"] - 146) < 15
    assert abs(gflops["RetinaFace R50 (1280x720)"] - 200) < 20
    assert abs(gflops["LivePortrait W: warping"] - 342) < 35
    assert abs(gflops["LivePortrait G: SPADE decoder"] - 892) < 90


def test_network_timing_harness_on_the_cheapest_networks():
    import torch

    from bench.networks import NetworkCase, measure, table
    from talkinghead.services.lipsync.networks.wav2lip import Wav2Lip
    from talkinghead.services.motion.networks.stitching_retargeting import build_mlps

    cases = [
        NetworkCase("stitching", build_mlps()[0].eval(), lambda b: (torch.rand(b, 126),), "x"),
        NetworkCase("wav2lip", Wav2Lip().eval(),
                    lambda b: (torch.rand(b, 1, 80, 16), torch.rand(b, 6, 96, 96)), "x"),
    ]
    rows = measure(cases, [1, 2], repeats=2)
    assert [r.best_batch in (1, 2) and r.fps > 0 and r.gflops_per_frame > 0 for r in rows] == [
        True, True]
    assert len(table(rows, limit_tflops=1.0)) == 4


def test_bench_command_smoke_run():
    """`python -m bench --smoke`, as README shows it: runs in seconds, prints both tables."""
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| matmul | float32 |" in proc.stdout
    assert "| Wav2Lip generator | per output frame | 7.93 |" in proc.stdout
    # each stage as served, the whole job ours and the seed's way, the warm profile
    for stage in ("motion", "lipsync", "restore"):
        assert f"| {stage} (lite) |" in proc.stdout
    for job in ("ours, cold", "ours, warm", "ours, warm, no restore", "seed way",
                "seed way, no restore"):
        assert f"| {job} |" in proc.stdout
    assert "| ours, warm, no restore | seed way, no restore |" in proc.stdout
    assert "| compose + encode (1080p H.264) |" in proc.stdout
