"""Shared fixtures: real files, real servers on loopback, real Redis."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from talkinghead.local_stack import LocalStack
from talkinghead.services.common.audio import ffmpeg_exe, write_wav

DEMO = resources.files("talkinghead.assets.demo")
REDIS_URL = os.environ.get("TALKINGHEAD_TEST_REDIS", "redis://127.0.0.1:6379/15")
# GFPGAN's --compile auto compiles on a CPU (a minute per replica at warm-up, worth it for a
# long-lived server, not for the dozens of short-lived ones the tests start): the tests run
# it eager, for this process and the servers it starts, but tests/test_restore_compile.py.
os.environ.setdefault("TALKINGHEAD_COMPILE", "off")


@pytest.fixture(scope="session", autouse=True)
def isolated_state(tmp_path_factory):
    """Caches and the embedded broker in temporary folders, for this process and children."""
    root = tmp_path_factory.mktemp("state")
    saved = {k: os.environ.get(k) for k in ("TALKINGHEAD_CACHE_DIR", "TALKINGHEAD_STATE_DIR")}
    os.environ["TALKINGHEAD_CACHE_DIR"] = str(root / "motion-clips")
    os.environ["TALKINGHEAD_STATE_DIR"] = str(root / "celery")
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def demo_face() -> Path:
    return Path(str(DEMO / "face.jpg"))


@pytest.fixture(scope="session")
def photo(demo_face) -> np.ndarray:
    """The demo face photo as an RGB array."""
    import cv2

    return cv2.cvtColor(cv2.imread(str(demo_face)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="session")
def face(photo):
    from talkinghead.services.common.face_detection import largest_face

    return largest_face(photo)


@pytest.fixture(scope="session")
def demo_card() -> dict:
    return json.loads((DEMO / "card.json").read_text())


@pytest.fixture(scope="session")
def assets_dir(tmp_path_factory) -> Path:
    """Inputs made once per session: short speech, bad files of every kind."""
    d = tmp_path_factory.mktemp("assets")
    speech = Path(str(DEMO / "speech.wav"))
    subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(speech),
         "-t", "3.2", str(d / "speech_3s.wav")],
        check=True,
    )
    for seconds in (20, 60):  # long enough to act on a job while it runs (kill, cancel)
        subprocess.run(
            [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-stream_loop", "-1",
             "-i", str(speech), "-t", str(seconds), str(d / f"speech_{seconds}s.wav")],
            check=True,
        )
    write_wav(d / "silence.wav", np.zeros(16000 * 2, np.float32))
    write_wav(d / "long.wav", np.zeros(16000 * 12, np.float32))
    (d / "empty.wav").write_bytes(b"")
    (d / "not_audio.wav").write_text("this is a text file, not audio\n" * 20)
    (d / "not_image.jpg").write_text("this is a text file, not an image\n")
    import cv2

    blank = np.full((256, 256, 3), 127, np.uint8)
    cv2.imwrite(str(d / "no_face.png"), blank)
    shutil.copy(Path(str(DEMO / "card.json")), d / "card.json")
    return d


@pytest.fixture(scope="session")
def lite_stack(tmp_path_factory) -> LocalStack:
    """The three lite model servers, two restore replicas, as real processes."""
    stack = LocalStack(tmp_path_factory.mktemp("stack-logs"), engine="lite", restore_replicas=2)
    with stack:
        yield stack


@pytest.fixture(scope="session")
def musetalk_weights(tmp_path_factory) -> Path:
    """MuseTalk's official layout filled with the reference pack's deterministic weights (its
    salt), written once per session: the UNet file alone is 3.4 GB. The reference tests and
    the engine tests share it; each module loads the networks it needs once."""
    from talkinghead.services.lipsync import musetalk_weights as mw
    from tests.reference_pack import fixture, salt_of

    root = tmp_path_factory.mktemp("musetalk-weights")
    mw.write_deterministic_checkpoints(root, salt_of(fixture("musetalk/vae.npz")))
    return root


def redis_available(url: str = REDIS_URL) -> bool:
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not redis_available():
        if os.environ.get("CI"):
            pytest.fail(f"Redis is required in CI but not reachable at {REDIS_URL}")
        pytest.skip(f"no Redis at {REDIS_URL} (CI always has one; start redis-server to run this)")
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    return REDIS_URL
