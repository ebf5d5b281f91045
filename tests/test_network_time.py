"""Network seconds: forward-pass time summed by hooks, in-process and exported by a server."""

from __future__ import annotations

import threading
import time

import numpy as np
import torch

from talkinghead.services.common.network_time import NetworkSeconds, networks_of


class Sleeper(torch.nn.Module):
    """A 'network' whose forward takes a known time."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return x


class FakeEngine:
    def __init__(self):
        self.generator = Sleeper(0.05)
        self.detector = Sleeper(0.02)
        self.not_a_network = "text"


def test_networks_of_finds_attributes_and_bundle_fields():
    from dataclasses import dataclass

    @dataclass
    class Bundle:
        appearance: torch.nn.Module
        fingerprint: str

    class Engine:
        def __init__(self):
            self.nets = Bundle(Sleeper(0), "x")
            self.parser = Sleeper(0)

    found = networks_of(Engine())
    assert len(found) == 2 and all(isinstance(n, Sleeper) for n in found)


def test_counts_forward_time_only():
    engine = FakeEngine()
    x = torch.zeros(1)
    outside = 0.0
    start = time.perf_counter()
    with NetworkSeconds(engine) as clock:
        for _ in range(3):
            engine.generator(x)
            engine.detector(x)
            t = time.perf_counter()
            time.sleep(0.05)  # pre/post-processing: not network time
            outside += time.perf_counter() - t
    wall = time.perf_counter() - start
    assert 3 * 0.07 <= clock.seconds <= wall - outside
    counted = clock.seconds
    engine.generator(x)  # after the block the hooks are gone
    assert clock.seconds == counted


def test_counts_concurrent_streams_separately():
    engine = FakeEngine()
    start = time.perf_counter()
    with NetworkSeconds(engine) as clock:
        threads = [threading.Thread(target=lambda: [engine.generator(torch.zeros(1))
                                                    for _ in range(4)]) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wall = time.perf_counter() - start
    # 12 passes of 0.05 s, overlapping in time, each counted once: more than the wall time
    assert clock.seconds >= 12 * 0.05 and clock.seconds <= 3 * wall


def test_a_neural_server_exports_its_network_seconds(tmp_path, photo, demo_face):
    """Wav2Lip on deterministic weights: talkinghead_network_seconds_total grows with the
    work and stays below the request's wall time."""
    from talkinghead.local_stack import LocalStack
    from talkinghead.orchestrator.stage_clients import (
        LipSyncClient,
        open_channel,
        wait_for_serving,
    )
    from talkinghead.services.common.audio import decode_audio_file
    from talkinghead.services.common.face_detection import largest_face
    from talkinghead.services.common.frames import VideoFrame
    from talkinghead.services.lipsync import wav2lip_weights as ww
    from tests.celery_jobs import metric

    ww.write_deterministic_checkpoints(tmp_path / "w", "talkinghead-a")
    stack = LocalStack(tmp_path / "logs", engine="wav2lip", with_metrics=True)
    try:
        port = stack.start_server("lipsync", 0, "lipsync", "--weights", str(tmp_path / "w")).port
        target = f"127.0.0.1:{port}"
        channel = open_channel(target)
        wait_for_serving(channel, "lipsync", target, 120)
        channel.close()
        metrics_port = stack.metrics_ports["lipsync"]
        before = metric(metrics_port, "talkinghead_network_seconds_total", stage="lipsync")
        face = largest_face(photo)
        frames = [VideoFrame(i, np.ascontiguousarray(photo), face) for i in range(24)]
        audio = decode_audio_file(demo_face.parent / "speech.wav")
        client = LipSyncClient(target, "test-network-seconds")
        start = time.perf_counter()
        assert len(list(client.sync(frames, audio, 25.0))) == 24
        wall = time.perf_counter() - start
        client.close()
        spent = metric(metrics_port, "talkinghead_network_seconds_total", stage="lipsync") - before
        assert 0 < spent < wall
    finally:
        stack.stop()
