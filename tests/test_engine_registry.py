"""A new engine is one engine class and one registry entry (services/stages.py).

The fake restore engine below is the whole of a third restore engine: served in-process
through the registry's own server factory, and by ``talkinghead serve restore --engine fake``
in a real process (the entry given by TALKINGHEAD_EXTRA_ENGINES), it answers over gRPC with
its own frames and its own name in EngineInfo.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest

from talkinghead.local_stack import LocalStack, cli_command
from talkinghead.orchestrator.stage_clients import (
    RestoreClient,
    StageFailed,
    open_channel,
    wait_for_serving,
)
from talkinghead.services import stages
from talkinghead.services.common.engine_contract import RestoreEngine
from talkinghead.services.common.engines import choose_engine
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.common.server import ServerSettings

ROOT = Path(__file__).resolve().parents[1]


class FakeRestoreEngine(RestoreEngine):
    """Restores by inverting every pixel: unmistakable in the frames that come back."""

    name = "fake"
    fingerprint = "fake-restore-1"

    def warmup(self) -> None:
        pass

    def restore(self, frames: list[VideoFrame], weight: float = 0.5,
                only_center_face: bool = False) -> list[VideoFrame]:
        return [VideoFrame(f.index, 255 - f.image, f.face) for f in frames]


FAKE_ENTRY = stages.EngineEntry("fake", FakeRestoreEngine, neural=False)  # the registry entry


@pytest.fixture
def fake_registered(monkeypatch):
    monkeypatch.setitem(stages.stage("restore").engines, "fake", FAKE_ENTRY)


def frames_in() -> list[VideoFrame]:
    rng = np.random.default_rng(3)
    return [VideoFrame(i, rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for i in range(5)]


def check_restored_by_fake(client: RestoreClient) -> None:
    sent = frames_in()
    back = client.restore(sent, 0.7, timeout=30)
    assert [f.index for f in back] == [f.index for f in sent]
    for before, after in zip(sent, back, strict=True):
        assert np.array_equal(after.image, 255 - before.image)
    assert client.engine.name == "fake"
    assert client.engine.fingerprint == "fake-restore-1"
    assert client.engine.device == "cpu"


def test_the_registry_builds_the_named_engine_and_auto_passes_it_by(fake_registered):
    engine = choose_engine(ServerSettings(stage="restore", port=0, engine="fake"))
    assert isinstance(engine, FakeRestoreEngine)
    assert "fake" in stages.stage("restore").engine_names
    # not neural: --engine auto never picks it (without weights it is lite)
    auto = choose_engine(ServerSettings(stage="restore", port=0, engine="auto", device="cpu"))
    assert auto.name == "lite"
    with pytest.raises(ValueError, match="unknown motion engine 'fake'"):
        choose_engine(ServerSettings(stage="motion", port=0, engine="fake"))


def test_an_engine_of_another_stage_is_refused(monkeypatch):
    entry = stages.EngineEntry("wrong", FakeRestoreEngine, neural=False)
    monkeypatch.setitem(stages.stage("lipsync").engines, "wrong", entry)
    with pytest.raises(TypeError, match="not a lipsync engine"):
        choose_engine(ServerSettings(stage="lipsync", port=0, engine="wrong"))


def test_fake_engine_served_in_process(fake_registered):
    settings = ServerSettings(stage="restore", port=0, engine="fake", metrics_port=0)
    server = stages.stage("restore").build_server(settings)
    port = server.start()
    client = RestoreClient(f"127.0.0.1:{port}", "test-fake")
    try:
        # loading: the gate is shut, callers are told to come back
        with pytest.raises(StageFailed) as caught:
            client.restore(frames_in(), timeout=10)
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        server.load()
        channel = open_channel(f"127.0.0.1:{port}")
        wait_for_serving(channel, "restore", f"127.0.0.1:{port}", timeout=10)
        channel.close()
        check_restored_by_fake(client)
    finally:
        client.close()
        server.server.stop(0).wait()


def test_fake_engine_served_by_talkinghead_serve(tmp_path, monkeypatch):
    """A real `talkinghead serve restore --engine fake` process, the engine's registry entry
    given by TALKINGHEAD_EXTRA_ENGINES (this module, importable from the repository root)."""
    monkeypatch.setenv(stages.EXTRA_ENGINES_ENV,
                       "restore:fake=tests.test_engine_registry:FakeRestoreEngine")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    stack = LocalStack(tmp_path / "logs", engine="fake")
    try:
        server = stack.start_server("restore", 0, "restore-fake")
        target = f"127.0.0.1:{server.port}"
        channel = open_channel(target)
        wait_for_serving(channel, "restore", target, timeout=60)
        channel.close()
        client = RestoreClient(target, "test-fake")
        check_restored_by_fake(client)
        client.close()
    finally:
        stack.stop()
    assert "engine fake on cpu ready" in server.log_text()


def test_an_unregistered_engine_is_refused_by_the_cli(monkeypatch):
    monkeypatch.delenv(stages.EXTRA_ENGINES_ENV, raising=False)
    done = subprocess.run(cli_command("serve", "restore", "--engine", "fake"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--engine" in done.stderr and "fake" in done.stderr
    # a name some other stage has: refused by the stage, naming its engines
    done = subprocess.run(cli_command("serve", "restore", "--engine", "wav2lip", "--port", "0"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "not a restore engine; choose from auto, gfpgan, lite" in done.stderr
