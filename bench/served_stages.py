"""Each stage as served: frames per second through gRPC on loopback, and where the time goes.

The same frames go through each stage three ways, one after the other on this machine:

  engine   the stage's engine in this process: the networks plus pre/post-processing
           (face crop, alignment, colour conversion, resizing, paste-back, mel windows)
  served   a real ``talkinghead serve STAGE`` process called over gRPC on loopback: the
           engine plus (de)serialisation and transport

and in both the networks' own forward time is summed by hooks (services/common/
network_time.py; the server exports it as talkinghead_network_seconds_total). So, per
frame, pre/post = engine - its network time, and gRPC = served - the server's network time
- pre/post. Each difference is taken within one run, so load from elsewhere on the machine
mostly shows up as network time, not as overhead.

Frames are those of the demo job: the demo photo (512x512) for motion, and the same photo
with its face geometry for lipsync and restore, the way the orchestrator sends them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from bench.common import NEURAL_ENGINE, build_engine
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.common.network_time import NetworkSeconds

STAGES = ("motion", "lipsync", "restore")
NOTE = ("Per frame: network = the server's own forward-pass seconds "
        "(talkinghead_network_seconds_total); pre/post = the same engine in-process minus its "
        "network seconds (crops, alignment, colour, masks, paste-back); gRPC = the rest of the "
        "served time ((de)serialisation, transport, the server's threads). Demo photo "
        "(512x512) with face geometry, as the orchestrator sends; motion renders the first "
        "frames of `talking` (F and M once per call, included).")


@dataclass
class StageFigures:
    stage: str
    engine: str
    frames: int
    network_s: float  # in the in-process engine run
    engine_s: float
    served_network_s: float  # in the server, during the served run
    served_s: float

    @property
    def pre_post_s(self) -> float:
        return self.engine_s - self.network_s

    @property
    def grpc_s(self) -> float:
        return self.served_s - self.served_network_s - self.pre_post_s

    def per_frame(self, seconds: float) -> float:
        return seconds / self.frames


# ---- the demo job's inputs -------------------------------------------------------------


def demo_inputs(motion_frames: int):
    """(photo RGB, photo bytes, face geometry, audio samples, template cut to N frames)."""
    import cv2

    from talkinghead.services.common.audio import decode_audio_file
    from talkinghead.services.common.face_detection import largest_face
    from talkinghead.services.motion.template import load_template

    demo = resources.files("talkinghead.assets.demo")
    face_bytes = (demo / "face.jpg").read_bytes()
    photo = cv2.cvtColor(cv2.imdecode(np.frombuffer(face_bytes, np.uint8), cv2.IMREAD_COLOR),
                         cv2.COLOR_BGR2RGB)
    face = largest_face(photo)
    audio = decode_audio_file(demo / "speech.wav")
    full = load_template("talking")
    n = min(motion_frames, full.n_frames)
    template = dataclasses.replace(
        full, scale=full.scale[:n], R=full.R[:n], exp=full.exp[:n], t=full.t[:n],
        eye_ratio=None if full.eye_ratio is None else full.eye_ratio[:n],
        lip_ratio=None if full.lip_ratio is None else full.lip_ratio[:n])
    return photo, face_bytes, face, audio, template


@contextlib.contextmanager
def served(stage: str, engine: str, weights: Path | None, device: str,
           batch_size: int) -> Iterator[tuple[str, str]]:
    """A ``talkinghead serve STAGE`` process on a free loopback port, serving: its target
    and its metrics URL."""
    from talkinghead.local_stack import LocalStack
    from talkinghead.orchestrator.stage_clients import open_channel, wait_for_serving

    with tempfile.TemporaryDirectory() as logs:
        os.environ["TALKINGHEAD_NETWORK_TIMING"] = "sync"  # count network seconds on cuda too
        stack = LocalStack(Path(logs), engine=engine, with_metrics=True)
        extra = ["--device", device, "--batch-size", str(batch_size)]
        if weights is not None:
            extra += ["--weights", str(weights)]
        port = stack.start_server(stage, 0, stage, *extra).port
        target = f"127.0.0.1:{port}"
        try:
            channel = open_channel(target)
            try:
                wait_for_serving(channel, stage, target, 600)
            finally:
                channel.close()
            yield target, f"http://127.0.0.1:{stack.metrics_ports[stage]}/metrics"
        finally:
            stack.stop()


def network_seconds_served(metrics_url: str, stage: str) -> float:
    """The server's talkinghead_network_seconds_total for ``stage`` (0 before any)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "talkinghead_network_seconds_total"
                    and sample.labels.get("stage") == stage):
                return sample.value
    return 0.0


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---- one stage ---------------------------------------------------------------------------


def measure_stage(stage: str, engine: str, weights: Path | None, device: str, frames: int,
                  batch_size: int) -> StageFigures:
    """Network, engine and served seconds for ``frames`` frames of ``stage``."""
    from talkinghead.orchestrator.pipeline import template_as_npz
    from talkinghead.orchestrator.stage_clients import LipSyncClient, MotionClient, RestoreClient
    from talkinghead.services.motion.options import MotionOptions

    photo, face_bytes, face, audio, template = demo_inputs(frames)
    options = MotionOptions(fps=template.fps)
    with_face = [VideoFrame(i, photo, face) for i in range(frames)]
    fps = 25.0

    local = build_engine(stage, engine, weights, device, batch_size)
    run_local: Callable[[], object] = {
        "motion": lambda: list(local.animate(photo, template, options)),
        "lipsync": lambda: list(local.sync(with_face, audio, fps)),
        "restore": lambda: local.restore(with_face, 0.5),
    }[stage]
    with NetworkSeconds(local) as network:
        engine_s = _timed(run_local)
    local = run_local = None  # free this copy of the model before the server loads its own

    with served(stage, engine, weights, device, batch_size) as (target, metrics_url):
        client = {"motion": MotionClient, "lipsync": LipSyncClient,
                  "restore": RestoreClient}[stage](target, "bench")
        run_served: Callable[[], object] = {
            "motion": lambda: client.animate(face_bytes, template_as_npz(template), options),
            "lipsync": lambda: list(client.sync(with_face, audio, fps)),
            "restore": lambda: client.restore(with_face, 0.5),
        }[stage]
        try:
            # the channel's first call pays connection set-up: once per job, not per frame
            warm = {"motion": lambda: client.animate(face_bytes, template_as_npz(
                        demo_inputs(2)[4]), options),
                    "lipsync": lambda: list(client.sync(with_face[:2], audio, fps)),
                    "restore": lambda: client.restore(with_face[:1], 0.5)}
            warm[stage]()
            before = network_seconds_served(metrics_url, stage)
            served_s = _timed(run_served)
            served_network_s = network_seconds_served(metrics_url, stage) - before
        finally:
            client.close()
    return StageFigures(stage, engine, frames, network.seconds, engine_s, served_network_s,
                        served_s)


def measure(engine: str, weights: Path | None, device: str,
            frames: dict[str, int], batch: dict[str, int]) -> list[StageFigures]:
    """Every stage; ``engine`` is 'neural' (each stage's network) or 'lite'."""
    rows = []
    for stage in STAGES:
        name = NEURAL_ENGINE[stage] if engine == "neural" else engine
        rows.append(measure_stage(stage, name, weights, device, frames[stage], batch[stage]))
        print(f"served {stage}: {rows[-1]}", flush=True)
    return rows


def table(rows: list[StageFigures]) -> list[str]:
    lines = ["| stage (engine) | frames | served frames / s | network ms / frame | "
             "pre/post ms / frame | gRPC ms / frame | network share of served |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        network, pre_post, grpc = (r.per_frame(s) * 1000 for s in
                                   (r.served_network_s, r.pre_post_s, r.grpc_s))
        lines.append(
            f"| {r.stage} ({r.engine}) | {r.frames} | {r.frames / r.served_s:.2f} | "
            f"{network:.1f} | {pre_post:.1f} | {grpc:.1f} | "
            f"{r.served_network_s / r.served_s:.0%} |")
    return lines
