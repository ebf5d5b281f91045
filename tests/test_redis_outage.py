"""A Redis outage while a job runs (issue #14 item 2), with real processes: our own
redis-server (AOF on, the broker and the result backend), a Celery worker, lite model
servers, ffmpeg. Redis is killed with SIGKILL in the middle of the job and started again on
the same port from the same append-only file: the job must end SUCCESS with exactly one
output, its result readable by the client, progress resuming after the outage.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from talkinghead.compositor import probe
from talkinghead.local_stack import LocalStack, free_port
from talkinghead.orchestrator.celery_app import make_app
from talkinghead.services.common.audio import ffmpeg_exe
from tests.celery_jobs import job, submit_and_wait

pytestmark = pytest.mark.e2e

HOST = socket.gethostname()
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
SECONDS = 14  # 350 frames: long enough to kill Redis in the middle of a stage
LONG_SECONDS = 24  # 600 frames: still composing when Redis is back, on a fast machine too


class OwnRedis:
    """A redis-server of this test's own (never the shared one), AOF on, no RDB snapshots:
    ``kill`` is SIGKILL, ``start`` again uses the same port and the same data folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.popen: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = open(self.folder / f"redis-{self.starts}.log", "wb")  # noqa: SIM115
        self.popen = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.folder), "--appendonly", "yes", "--save", "",
             "--daemonize", "no", "--protected-mode", "no"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.popen.returncode}")
            if self.ping():
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def own_redis(tmp_path):
    server = OwnRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    from importlib import resources

    source = Path(str(resources.files("talkinghead.assets.demo") / "speech.wav"))
    folder = tmp_path_factory.mktemp("outage-audio")
    for seconds in (SECONDS, LONG_SECONDS, 2):
        subprocess.run(
            [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-stream_loop", "-1",
             "-i", str(source), "-t", str(seconds), str(folder / f"speech_{seconds}s.wav")],
            check=True,
        )
    return folder / f"speech_{SECONDS}s.wav"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Lite model servers (one restore replica) for this module's jobs."""
    stack = LocalStack(tmp_path_factory.mktemp("outage-logs"), engine="lite")
    with stack:
        yield stack


def worker_env(redis_url: str, **more: str) -> dict[str, str]:
    return {"TALKINGHEAD_BROKER_URL": redis_url, "TALKINGHEAD_RESULT_BACKEND": redis_url,
            "TALKINGHEAD_RETRY_BASE_SECONDS": "1", **more}


class Watcher:
    """Polls a job's state through a client that lives through the outage: every answer is
    kept with its time, a poll that fails (Redis down) is counted and tried again."""

    def __init__(self, result):
        self.result = result
        self.seen: list[tuple[float, str, dict | None]] = []
        self.failed_polls = 0

    def poll(self) -> str | None:
        try:
            self.result.backend._cache.pop(self.result.id, None)
            meta = self.result.backend.get_task_meta(self.result.id, cache=False)
        except Exception:  # noqa: BLE001 - Redis is down: that is the point of the test
            self.failed_polls += 1
            return None
        state, info = meta.get("status"), meta.get("result")
        self.seen.append((time.monotonic(), state, info if isinstance(info, dict) else None))
        return state

    def done(self, stage: str) -> int:
        for _, state, info in reversed(self.seen):
            if state == "PROGRESS" and info:
                return int(info.get("stages", {}).get(stage, {}).get("done", 0))
        return 0

    def wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                             f"last state {self.seen[-1][1] if self.seen else None}")

    def last_state(self) -> str | None:
        return self.seen[-1][1] if self.seen else None


def only_the_output(folder: Path, out: Path) -> None:
    assert sorted(folder.iterdir()) == [out], sorted(p.name for p in folder.iterdir())


def run_outage(servers, own_redis, speech, demo_face, demo_card, out_dir: Path, job_id: str,
               kill_when, down_s: float, down_until=None, env: dict[str, str] | None = None,
               then=None, pool: str = "prefork"):
    """Submit a job, SIGKILL Redis once ``kill_when(watcher)`` holds, start it again
    ``down_s`` later (and not before ``down_until(worker)`` holds, if given); wait for the
    job to end; call ``then(app, worker)`` while the worker still runs.
    (watcher, worker process, kill time, output path)."""
    worker = servers.start_worker(f"worker-{job_id}", worker_env(own_redis.url, **(env or {})),
                                  "--queues", f"q-{job_id}", "--pool", pool)
    app = make_app(own_redis.url, own_redis.url)
    out = out_dir / "out.mp4"
    spec = job(demo_face.parent, demo_face, demo_card, out, job_id=job_id, audio=str(speech))
    result = None
    try:
        result = app.send_task("talkinghead.render", args=[spec], task_id=job_id,
                               queue=f"q-{job_id}")
        watcher = Watcher(result)
        watcher.wait(lambda: kill_when(watcher), 120, "the moment to kill Redis")
        own_redis.kill()
        killed_at = time.monotonic()
        time.sleep(down_s)
        if down_until is not None:
            deadline = time.monotonic() + 120
            while not down_until(worker) and time.monotonic() < deadline:
                time.sleep(0.1)
        own_redis.start()
        watcher.wait(lambda: watcher.last_state() in ("SUCCESS", "FAILURE"), 180,
                     "the job to end")
        if then is not None:
            then(app, worker)
        return watcher, worker, killed_at, out
    finally:
        worker.stop()
        with contextlib.suppress(ValueError):
            servers.processes.remove(worker)
        if result is not None:  # unsubscribe now, while our Redis answers
            with contextlib.suppress(Exception):
                result.backend.remove_pending_result(result)


def events(log: str) -> list[str]:
    """The structured ``event`` fields in a worker's JSON log, in order."""
    found = []
    for line in log.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                event = json.loads(line).get("event")
                if event:
                    found.append(event)
    return found


def assert_acknowledged(redis_url: str, queue: str) -> None:
    """The job's message is gone from Redis: not waiting in its queue, not held unacked
    (so it is not handed out again when the visibility timeout passes)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        # the worker acknowledges just after the result is stored
        deadline = time.monotonic() + 15
        while client.hlen("unacked") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.hlen("unacked") == 0, client.hgetall("unacked")
        assert client.llen(queue) == 0
    finally:
        client.close()


def test_redis_killed_mid_compose_job_still_succeeds(servers, own_redis, speech, demo_face,
                                                     demo_card, tmp_path):
    """The issue's case: SIGKILL of Redis (broker and result backend) at compose 150/600,
    back 4 s later from its AOF: the job ends SUCCESS, one output, its result readable,
    progress resumed while the job still ran, the message acknowledged once."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    n = LONG_SECONDS * 25
    audio = speech.parent / f"speech_{LONG_SECONDS}s.wav"
    later: dict = {}

    def afterwards(app, worker) -> None:
        """The worker is whole again: it answers control commands (so `talkinghead
        cancel` reaches it) and takes the next job."""
        later["ping"] = app.control.ping(destination=[f"worker-outage-compose-1@{HOST}"],
                                         timeout=5.0)
        spec = job(demo_face.parent, demo_face, demo_card, tmp_path / "next.mp4",
                   job_id="outage-compose-2", audio=str(speech.parent / "speech_2s.wav"))
        later["next"] = submit_and_wait(app, spec, timeout=120,
                                        queue="q-outage-compose-1")[0].state

    watcher, worker, killed_at, out = run_outage(
        servers, own_redis, audio, demo_face, demo_card, out_dir, "outage-compose-1",
        kill_when=lambda w: w.done("compose") >= 150, down_s=4.0, then=afterwards)
    log = worker.log_path.read_text(errors="replace")
    assert watcher.last_state() == "SUCCESS", (watcher.seen[-1], log[-4000:])
    result = watcher.seen[-1][2]
    assert result is not None and result["frames"] == n and result["output"] == str(out)
    assert probe(out).duration_s == pytest.approx(LONG_SECONDS, abs=0.1)
    only_the_output(out_dir, out)
    # progress was published again after Redis came back, while frames were still composed
    after = [info["stages"]["compose"]["done"] for t, state, info in watcher.seen
             if t > killed_at and state == "PROGRESS" and info]
    assert any(150 < done < n for done in after), after
    # the worker saw the outage, said so once, and said when progress was stored again
    assert "Connection to broker lost" in log
    seen = events(log)
    assert seen.count("progress_publish_failed") == 1, seen
    assert "progress_publish_resumed" in seen, seen
    # the job ran once, and its message is acknowledged (not left to be run again)
    assert log.count("job received: ") == 2, log[-4000:]  # this job, and the next one
    assert_acknowledged(own_redis.url, "q-outage-compose-1")
    assert later["ping"], "the worker does not answer control commands after the outage"
    assert later["next"] == "SUCCESS"


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_redis_down_when_the_job_ends_result_stored_when_back(
        servers, own_redis, speech, demo_face, demo_card, tmp_path, pool):
    """Redis killed near the end of the job and kept down until the render has ended, plus
    3 s: the job's final state cannot be stored when the render ends; the worker retries the
    store until Redis answers, then acknowledges. SUCCESS, readable, one output, run once.
    With the default pool (a process per job) and with threads."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    n = SECONDS * 25

    def rendered(worker) -> bool:
        """The render has ended (its log line is out); then 3 s more of outage, so the
        worker's store of the final state has met a dead Redis."""
        if '"rendered ' not in worker.log_path.read_text(errors="replace"):
            return False
        time.sleep(3)
        return True

    watcher, worker, killed_at, out = run_outage(
        servers, own_redis, speech, demo_face, demo_card, out_dir, f"outage-end-{pool}",
        kill_when=lambda w: w.done("compose") >= n - 50, down_s=3.0,
        down_until=rendered,
        # clients give up after one retry: the worker's final store must not
        env={"TALKINGHEAD_RESULT_RETRIES": "1"}, pool=pool)
    log = worker.log_path.read_text(errors="replace")
    assert watcher.last_state() == "SUCCESS", (watcher.seen[-1], log[-4000:])
    result = watcher.seen[-1][2]
    assert result is not None and result["frames"] == n and result["output"] == str(out)
    assert probe(out).duration_s == pytest.approx(SECONDS, abs=0.1)
    only_the_output(out_dir, out)
    # the render ended while Redis was down: its result was stored by a retry
    rendered = [json.loads(line) for line in log.splitlines()
                if line.startswith("{") and '"rendered ' in line]
    assert len(rendered) == 1
    assert "Failed operation _store_result" in log, log[-4000:]
    assert log.count("job received") == 1, log[-4000:]
    assert_acknowledged(own_redis.url, f"q-outage-end-{pool}")
