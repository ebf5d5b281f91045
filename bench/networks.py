"""Every network of the pipeline, per frame: FLOPs, frames per second at the best batch,
and the FLOP/s that achieves as a share of the machine's own limit (bench/machine_limit.py).

The networks are loaded from deterministic-weight checkpoints in the official layout
(cost does not depend on weight values), at the resolution the pipeline feeds them:

| network | input per frame | runs |
|---|---|---|
| LivePortrait F, M | 256x256 photo | once per presenter (motion clip, then cached) |
| LivePortrait W, G, stitching | 32x16x64x64 features, 21 keypoints | every frame of a motion clip |
| Wav2Lip generator | 96x96 face pair + 80x16 mel | every output frame |
| S3FD | 640x360 frame | every frame in the official way; never in ours (geometry travels) |
| GFPGANv1Clean | 512x512 aligned face | every output frame |
| RetinaFace R50 | 1280x720 frame | every frame in the official way; never in ours |
| ParseNet | 512x512 face | every frame with the official paste mask |

The parts ``limit`` and ``networks`` of ``python -m bench``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.common import count_flops, interleaved_timings


@dataclass(frozen=True)
class NetworkCase:
    name: str
    net: Callable  # called with *inputs(batch)
    inputs: Callable[[int], tuple]
    runs: str  # when the pipeline runs it


@dataclass(frozen=True)
class NetworkRow:
    name: str
    runs: str
    gflops_per_frame: float
    best_batch: int
    fps: float  # frames per second at the best batch (median sample)
    spread: float = 0.0  # (slowest − fastest) / median of the best batch's samples

    @property
    def tflops(self) -> float:
        return self.gflops_per_frame * self.fps / 1000.0


def write_weights(folder: Path) -> Path:
    """Deterministic checkpoints of every network, in the official layout."""
    from talkinghead.services.lipsync import wav2lip_weights
    from talkinghead.services.motion import liveportrait_weights
    from talkinghead.services.restore import gfpgan_weights

    for module in (liveportrait_weights, wav2lip_weights, gfpgan_weights):
        module.write_deterministic_checkpoints(folder, "talkinghead-a")
    return folder


def loaded_networks(weights: Path | None, device: str) -> dict[str, torch.nn.Module]:
    """The networks from ``weights``; with None, freshly built on the meta device (shapes and
    FLOPs only: what a smoke run of the harness needs)."""
    from talkinghead.services.lipsync import wav2lip_weights as ww
    from talkinghead.services.lipsync.networks.s3fd import S3FD
    from talkinghead.services.lipsync.networks.wav2lip import Wav2Lip
    from talkinghead.services.motion import liveportrait_weights as lp
    from talkinghead.services.motion.networks.stitching_retargeting import build_mlps
    from talkinghead.services.restore import gfpgan_weights as gw
    from talkinghead.services.restore.networks.gfpgan import GFPGANv1Clean
    from talkinghead.services.restore.networks.parsenet import ParseNet
    from talkinghead.services.restore.networks.retinaface import RetinaFace

    if weights is None:
        with torch.device("meta"):
            nets = {key: cls() for key, (cls, _) in lp._single_file_networks().items()}
            nets["stitching"] = build_mlps()[0]
            nets.update(wav2lip=Wav2Lip(), s3fd=S3FD(), gfpgan=GFPGANv1Clean(),
                        retinaface=RetinaFace(), parsenet=ParseNet())
    else:
        lp_nets = lp.load_networks(weights)
        nets = {
            "appearance_feature_extractor": lp_nets.appearance,
            "motion_extractor": lp_nets.motion,
            "warping_module": lp_nets.warping,
            "spade_generator": lp_nets.generator,
            "stitching": lp_nets.stitching,
            "wav2lip": ww.load_generator(weights)[0],
            "s3fd": ww.load_detector(weights),
            "gfpgan": gw.load_restorer(weights)[0],
            "retinaface": gw.load_detector(weights),
            "parsenet": gw.load_parser(weights),
        }
    return {k: v.to(device).eval() for k, v in nets.items()}


def network_cases(nets: dict[str, torch.nn.Module], device: str) -> list[NetworkCase]:
    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, device=device)

    warping = nets["warping_module"]
    return [
        NetworkCase("LivePortrait F: appearance features", nets["appearance_feature_extractor"],
                    lambda b: (rand(b, 3, 256, 256),), "once per presenter"),
        NetworkCase("LivePortrait M: motion extractor", nets["motion_extractor"],
                    lambda b: (rand(b, 3, 256, 256),), "once per presenter"),
        NetworkCase("LivePortrait W: warping", lambda f, x: warping(f, x, x),
                    lambda b: (rand(b, 32, 16, 64, 64), rand(b, 21, 3)), "per clip frame"),
        NetworkCase("LivePortrait G: SPADE decoder", nets["spade_generator"],
                    lambda b: (rand(b, 256, 64, 64),), "per clip frame"),
        NetworkCase("LivePortrait stitching MLP", nets["stitching"],
                    lambda b: (rand(b, 126),), "per clip frame"),
        NetworkCase("Wav2Lip generator", nets["wav2lip"],
                    lambda b: (rand(b, 1, 80, 16), rand(b, 6, 96, 96)), "per output frame"),
        NetworkCase("S3FD (640x360)", nets["s3fd"],
                    lambda b: (rand(b, 3, 360, 640),), "per frame, official way only"),
        NetworkCase("GFPGANv1Clean (512)", nets["gfpgan"],
                    lambda b: (rand(b, 3, 512, 512) * 2 - 1,), "per output frame"),
        NetworkCase("RetinaFace R50 (1280x720)", nets["retinaface"],
                    lambda b: (rand(b, 3, 720, 1280),), "per frame, official way only"),
        NetworkCase("ParseNet (512)", nets["parsenet"],
                    lambda b: (rand(b, 3, 512, 512),), "per frame, official paste mask"),
    ]


def flops_per_frame(case: NetworkCase) -> float:
    with torch.inference_mode():
        return count_flops(lambda: case.net(*case.inputs(1)))


def case_calls(cases: list[NetworkCase], batches: list[int]) -> dict[tuple[str, int], Callable]:
    """(network, batch) → one forward pass on inputs made once."""
    calls = {}
    for case in cases:
        for batch in batches:
            x = case.inputs(batch)

            def call(case: NetworkCase = case, x: tuple = x) -> object:
                with torch.inference_mode():
                    return case.net(*x)
            calls[(case.name, batch)] = call
    return calls


def rows_from(cases: list[NetworkCase], batches: list[int], timings: dict,
              flops: dict[str, float] | None = None) -> list[NetworkRow]:
    """Each case's best batch (by median frames/s) and its figures there."""
    rows = []
    for case in cases:
        gflops = (flops or {}).get(case.name) or flops_per_frame(case) / 1e9
        fps = {batch: batch / timings[(case.name, batch)].median for batch in batches}
        for batch in batches:
            print(f"{case.name:<40} batch {batch:>3}: {fps[batch]:9.2f} frames/s", flush=True)
        best = max(fps, key=fps.get)
        rows.append(NetworkRow(case.name, case.runs, gflops, best, fps[best],
                               timings[(case.name, best)].spread))
    return rows


def measure(cases: list[NetworkCase], batches: list[int], repeats: int = 5,
            flops: dict[str, float] | None = None) -> list[NetworkRow]:
    """Every case at every batch, ``repeats`` interleaved samples each; best batch per case."""
    timings = interleaved_timings(case_calls(cases, batches), repeats)
    return rows_from(cases, batches, timings, flops)


def table(rows: list[NetworkRow], limit_tflops: float, limit_spread: float = 0.0) -> list[str]:
    """One row per network; frames/s and the limit are medians of interleaved samples, and
    the share's spread column gives both figures' spreads (network / limit)."""
    out = ["| network | runs | GFLOPs / frame | best batch | frames / s | TFLOP/s achieved "
           "| share of the fp32 limit | spread (network / limit) |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r.name} | {r.runs} | {r.gflops_per_frame:.2f} | {r.best_batch} "
                   f"| {r.fps:.2f} | {r.tflops:.3f} | {100 * r.tflops / limit_tflops:.0f} % "
                   f"| {100 * r.spread:.0f} % / {100 * limit_spread:.0f} % |")
    return out


def limit_and_networks(device: str, cases: list[NetworkCase], batches: list[int],
                       repeats: int = 5, size: int | None = None):
    """The machine's limit and every network, timed in the same interleaved rounds (one
    statistic for both: the median of ``repeats`` samples, with its spread). Returns (the
    best fp32 peak, the network rows) and every peak as a third item."""
    from bench import machine_limit

    kernels = machine_limit.kernel_calls(device, size)
    calls: dict = {("limit", *key): fn for key, (fn, _) in kernels.items()}
    calls.update(case_calls(cases, batches))
    timings = interleaved_timings(calls, repeats, min_sample_seconds=machine_limit.MIN_SAMPLE_SECONDS)
    peaks = machine_limit.peaks_from(kernels, {key[1:]: t for key, t in timings.items()
                                               if key[0] == "limit"})
    limit = max((p for p in peaks if p.dtype == "float32"), key=lambda p: p.tflops)
    return limit, rows_from(cases, batches, timings), peaks
