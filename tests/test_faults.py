"""Faults a production render survives, each with real processes: a Celery worker on real
Redis, lite model servers on loopback, real ffmpeg. Nothing lost, nothing duplicated.

(A restore replica killed mid-job is in test_restore_fanout.py; a lipsync server down when
the job starts in test_end_to_end.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from talkinghead.compositor import probe
from talkinghead.local_stack import LocalStack, free_port
from talkinghead.orchestrator.celery_app import make_app
from tests.celery_jobs import (
    child_pids,
    frames_done,
    job,
    metric,
    submit_and_wait,
    wait_until,
)

pytestmark = pytest.mark.e2e



@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Lite servers with metrics (two restore replicas), for this module's jobs only."""
    stack = LocalStack(tmp_path_factory.mktemp("fault-logs"), engine="lite", restore_replicas=2,
                       with_metrics=True)
    with stack:
        yield stack


def redis_env(redis_url: str, **more: str) -> dict[str, str]:
    return {"TALKINGHEAD_BROKER_URL": redis_url, "TALKINGHEAD_RESULT_BACKEND": redis_url,
            "TALKINGHEAD_RETRY_BASE_SECONDS": "1", **more}


def start_worker(stack: LocalStack, name: str, queue: str, env: dict[str, str]):
    return stack.start_worker(name, env, "--queues", queue)


def stop(stack: LocalStack, *processes) -> None:
    for proc in processes:
        proc.stop()
        stack.processes.remove(proc)


def only_the_output(folder: Path, out: Path) -> None:
    """The folder holds the finished video and nothing else (no partial files)."""
    assert sorted(folder.iterdir()) == [out], sorted(p.name for p in folder.iterdir())


def send(app, queue: str, spec: dict):
    """Submit ``spec`` to ``queue`` under its job id; its AsyncResult."""
    return app.send_task("talkinghead.render", queue=queue, task_id=spec["job_id"], args=[spec])


def long_job(assets_dir, demo_face, demo_card, out: Path, job_id: str) -> dict:
    return job(assets_dir, demo_face, demo_card, out, job_id=job_id,
               audio=str(assets_dir / "speech_20s.wav"))


def test_cancel_stops_the_jobs_streams_promptly(stack, redis_url, assets_dir, demo_face,
                                                 demo_card, tmp_path):
    """`talkinghead cancel` on a running job: state REVOKED, every server's stream for it
    ends within seconds (not at its deadline), no output, no partial file."""
    env = redis_env(redis_url)
    worker = start_worker(stack, "worker-cancel", "cancel-test", env)
    app = make_app(redis_url, redis_url)
    out = tmp_path / "cancelled.mp4"
    try:
        spec = job(assets_dir, demo_face, demo_card, out, job_id="fault-cancel-1",
                   audio=str(assets_dir / "speech_60s.wav"))  # 1500 frames: far from done
        result = send(app, "cancel-test", spec)
        wait_until(lambda: frames_done(result, "lipsync") >= 25, 90, "lipsync under way")
        proc = subprocess.run([sys.executable, "-m", "talkinghead.cli", "cancel", result.id],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, **env})
        assert proc.returncode == 0, proc.stderr
        cancelled_at = time.monotonic()
        wait_until(lambda: result.state == "REVOKED", 15, "state REVOKED")

        def streams_in_flight() -> float:
            return sum(metric(port, "talkinghead_streams_in_flight")
                       for port in stack.metrics_ports.values())

        wait_until(lambda: streams_in_flight() == 0, 10, "servers' streams to end", poll=0.2)
        stopped_after = time.monotonic() - cancelled_at
        lipsync_frames = metric(stack.metrics_ports["lipsync"], "talkinghead_frames_total")
        assert lipsync_frames < 1500, "the job ran to the end: it was not stopped"
        assert stopped_after < 10
        assert list(tmp_path.iterdir()) == []
        # the worker is free again: the next job runs
        again = tmp_path / "after-cancel.mp4"
        done, _ = submit_and_wait(app, job(assets_dir, demo_face, demo_card, again,
                                           job_id="fault-cancel-2"), queue="cancel-test")
        assert done.state == "SUCCESS", done.result
    finally:
        stop(stack, worker)


def test_worker_process_killed_mid_job_is_redelivered(stack, redis_url, assets_dir, demo_face,
                                                      demo_card, tmp_path):
    """SIGKILL of the process running the job (the pool child): the job goes back to the
    queue (acks_late + reject_on_worker_lost), runs again, and leaves one output."""
    worker = start_worker(stack, "worker-child-kill", "child-kill-test", redis_env(redis_url))
    app = make_app(redis_url, redis_url)
    out = tmp_path / "redelivered.mp4"
    try:
        spec = long_job(assets_dir, demo_face, demo_card, out, "fault-child-kill-1")
        result = send(app, "child-kill-test", spec)
        wait_until(lambda: frames_done(result, "compose") >= 25, 90, "compose under way")
        children = child_pids(worker.popen.pid)
        assert len(children) == 1, children  # --concurrency 1
        os.kill(children[0], signal.SIGKILL)
        wait_until(lambda: result.state in ("SUCCESS", "FAILURE"), 120, "the job to end",
                   poll=0.2)
        assert result.state == "SUCCESS", result.result
        assert probe(out).duration_s == pytest.approx(20.0, abs=0.1)
        only_the_output(tmp_path, out)
        log = worker.log_path.read_text()
        assert "SIGKILL" in log and log.count("job received") == 2, log[-3000:]
    finally:
        stop(stack, worker)


def test_whole_worker_killed_mid_job_is_redelivered(stack, redis_url, assets_dir, demo_face,
                                                    demo_card, tmp_path):
    """SIGKILL of the whole worker (main process and pool): the unacknowledged job is handed
    to another worker once the Redis visibility timeout passes; one output."""
    env = redis_env(redis_url, TALKINGHEAD_VISIBILITY_TIMEOUT_SECONDS="20")
    first = start_worker(stack, "worker-killed", "worker-kill-test", env)
    app = make_app(redis_url, redis_url)
    out = tmp_path / "survivor.mp4"
    second = None
    try:
        spec = long_job(assets_dir, demo_face, demo_card, out, "fault-worker-kill-1")
        result = send(app, "worker-kill-test", spec)
        wait_until(lambda: frames_done(result, "compose") >= 25, 90, "compose under way")
        os.killpg(first.popen.pid, signal.SIGKILL)
        first.popen.wait()
        assert not out.exists()
        second = start_worker(stack, "worker-after-kill", "worker-kill-test", env)
        wait_until(lambda: result.state == "SUCCESS" or result.state == "FAILURE", 180,
                   "the redelivered job to end", poll=0.2)
        assert result.state == "SUCCESS", result.result
        assert probe(out).duration_s == pytest.approx(20.0, abs=0.1)
        only_the_output(tmp_path, out)  # the killed attempt's partial files are gone too
        assert "job received" in second.log_path.read_text()
    finally:
        stop(stack, first, *([second] if second else []))


def test_lipsync_server_restarted_mid_job(stack, redis_url, assets_dir, demo_face, demo_card,
                                          tmp_path):
    """The lipsync server dies mid-stream and comes back on the same port: the job fails
    over to a retry (state RETRY, backoff) and completes; one output."""
    worker = start_worker(stack, "worker-lipsync-restart", "lipsync-restart-test",
                          redis_env(redis_url))
    app = make_app(redis_url, redis_url)
    out = tmp_path / "retried.mp4"
    lipsync = next(p for p in stack.processes if p.name == "lipsync")
    port = stack.ports["lipsync"]
    restarted = None
    try:
        spec = long_job(assets_dir, demo_face, demo_card, out, "fault-lipsync-restart-1")
        result = send(app, "lipsync-restart-test", spec)
        wait_until(lambda: frames_done(result, "lipsync") >= 25, 90, "lipsync under way")
        os.killpg(lipsync.popen.pid, signal.SIGKILL)
        lipsync.popen.wait()
        stack.processes.remove(lipsync)
        states = {wait_until(lambda: result.state if result.state != "PROGRESS" else None, 60,
                             "the job to leave PROGRESS")}
        restarted = stack.start_server("lipsync", port, "lipsync-restarted")
        stack.wait_serving(120)
        while result.state not in ("SUCCESS", "FAILURE"):
            states.add(result.state)
            time.sleep(0.1)
        assert "RETRY" in states, states
        assert result.state == "SUCCESS", result.result
        assert probe(out).duration_s == pytest.approx(20.0, abs=0.1)
        only_the_output(tmp_path, out)
    finally:
        stop(stack, worker)
        if lipsync in stack.processes:
            stop(stack, lipsync)
        if restarted is None:  # keep the module's stack whole for the tests after this one
            stack.start_server("lipsync", port, "lipsync-restarted")
            stack.wait_serving(120)


@pytest.fixture(scope="module")
def wav2lip_weights(tmp_path_factory):
    """Wav2Lip on deterministic weights (no S3FD: the frames carry their face boxes)."""
    from talkinghead.services.lipsync import wav2lip_weights as ww

    root = tmp_path_factory.mktemp("w2l-weights")
    ww.write_deterministic_checkpoints(root, "talkinghead-a")
    (root / ww.FILES["s3fd"]).unlink()
    return root


def test_job_waits_for_a_server_still_loading_its_model(stack, redis_url, wav2lip_weights,
                                                        assets_dir, demo_face, demo_card,
                                                        tmp_path):
    """A job starts while its lipsync server is still starting and loading Wav2Lip: the job
    waits for SERVING (no failure, no retry) and completes with the neural engine."""
    import grpc
    from grpc_health.v1 import health_pb2

    port = free_port()
    worker = start_worker(stack, "worker-loading", "loading-test",
                          redis_env(redis_url, TALKINGHEAD_LIPSYNC_TARGET=f"127.0.0.1:{port}"))
    app = make_app(redis_url, redis_url)
    out = tmp_path / "waited.mp4"
    server = None
    try:
        result = send(app, "loading-test",
                      job(assets_dir, demo_face, demo_card, out, job_id="fault-loading-1"))
        wait_until(lambda: result.state == "PROGRESS", 60, "the job to start")
        server = stack._spawn("lipsync-loading", [
            sys.executable, "-m", "talkinghead.cli", "serve", "lipsync", "--port", str(port),
            "--engine", "wav2lip", "--weights", str(wav2lip_weights), "--metrics-port", "0"])
        # watch the server come up: first no answer, then NOT_SERVING while it loads
        from grpc_health.v1 import health_pb2_grpc

        # reconnect within milliseconds: gRPC's default backoff (1 s, growing) after the
        # first refused connection can sleep through the whole NOT_SERVING phase
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
            ("grpc.initial_reconnect_backoff_ms", 10), ("grpc.min_reconnect_backoff_ms", 10),
            ("grpc.max_reconnect_backoff_ms", 50)])
        health = health_pb2_grpc.HealthStub(channel)
        seen, states = [], set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states.add(result.state)
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            except Exception:  # noqa: BLE001 - not listening yet
                name = "NO_ANSWER"
            if not seen or seen[-1] != name:
                seen.append(name)
            if name == "SERVING":
                break
            time.sleep(0.02)
        channel.close()
        assert "NOT_SERVING" in seen and seen[-1] == "SERVING", seen
        assert states == {"PROGRESS"}, states  # it waited: no retry, no failure
        done, _ = wait_until(lambda: (result, None) if result.state in ("SUCCESS", "FAILURE")
                             else None, 180, "the job to end", poll=0.2)
        assert result.state == "SUCCESS", result.result
        assert result.result["engines"]["lipsync"] == "wav2lip"
        only_the_output(tmp_path, out)
    finally:
        stop(stack, worker, *([server] if server else []))


def start_redis(port: int, folder: Path) -> subprocess.Popen:
    """A redis-server of our own that keeps its data in an append-only file, as production
    Redis must (without it a restart loses every queued job)."""
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "yes", "--appendfsync", "always", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    import redis

    client = redis.Redis(port=port)
    wait_until(lambda: _pings(client), 20, "redis-server to answer", poll=0.1)
    return proc


def _pings(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_queued_job_survives_a_redis_restart(stack, assets_dir, demo_face, demo_card, tmp_path):
    """A job waits in the queue when Redis is killed and restarted: it is still there, a
    worker renders it; a worker connected across a second restart reconnects and renders the
    next one."""
    import shutil

    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is required in CI")
        pytest.skip("needs redis-server on PATH")
    port, folder = free_port(), tmp_path / "redis-data"
    folder.mkdir()
    url = f"redis://127.0.0.1:{port}/0"
    redis_proc = start_redis(port, folder)
    outputs = tmp_path / "out"
    outputs.mkdir()
    worker, results = None, []
    try:
        app = make_app(url, url)
        queued = send(app, "redis-restart-test", job(assets_dir, demo_face, demo_card,
                                                     outputs / "a.mp4", job_id="fault-redis-1"))
        results.append(queued)
        redis_proc.kill()
        redis_proc.wait()
        redis_proc = start_redis(port, folder)
        worker = start_worker(stack, "worker-redis-restart", "redis-restart-test",
                              {"TALKINGHEAD_BROKER_URL": url, "TALKINGHEAD_RESULT_BACKEND": url})
        wait_until(lambda: queued.state in ("SUCCESS", "FAILURE"), 120, "the queued job",
                   poll=0.2)
        assert queued.state == "SUCCESS", queued.result

        redis_proc.kill()  # again, now with the worker connected and idle
        redis_proc.wait()
        redis_proc = start_redis(port, folder)
        after, _ = submit_and_wait(make_app(url, url),
                                   job(assets_dir, demo_face, demo_card, outputs / "b.mp4",
                                       job_id="fault-redis-2"),
                                   timeout=120, queue="redis-restart-test")
        results.append(after)
        assert after.state == "SUCCESS", after.result
        assert sorted(p.name for p in outputs.iterdir()) == ["a.mp4", "b.mp4"]
    finally:
        if worker is not None:
            stop(stack, worker)
        for result in results:  # unsubscribe now, while this Redis still answers
            result.backend.remove_pending_result(result)
        redis_proc.kill()
        redis_proc.wait()


def test_time_limits_follow_the_audio_length(stack, redis_url, assets_dir, demo_face, demo_card,
                                             tmp_path):
    """The worker sets each job's Celery limits from its audio (base + per audio second):
    a job past its soft limit stops, cleans up and fails with the reason."""
    env = redis_env(redis_url, TALKINGHEAD_JOB_SECONDS_BASE="2",
                    TALKINGHEAD_JOB_SECONDS_PER_AUDIO_SECOND="0.05")
    worker = start_worker(stack, "worker-limits", "limits-test", env)
    app = make_app(redis_url, redis_url)
    out = tmp_path / "too-slow.mp4"
    try:
        # 20 s of audio: soft limit 2 + 0.05 x 20 = 3 s, far less than the job needs
        result, _ = submit_and_wait(app, long_job(assets_dir, demo_face, demo_card, out,
                                                  "fault-limit-1"), queue="limits-test")
        assert result.state == "FAILURE"
        assert "job exceeded its time limit of 3 s" in str(result.result)
        assert list(tmp_path.iterdir()) == []
        log = worker.log_path.read_text()
        assert "20.0 s of audio, time limits soft 3 s, hard 123 s" in log
    finally:
        stop(stack, worker)


def test_job_budget_arithmetic(monkeypatch):
    from talkinghead.orchestrator.time_budget import JobBudget

    monkeypatch.setenv("TALKINGHEAD_MAX_JOB_SECONDS", "3600")
    budget = JobBudget.for_audio(10)
    assert (budget.soft_s, budget.hard_s) == (1800 + 120 * 10, 1800 + 1200 + 120)
    assert budget.stream_s == 300 + 120 * 10 and budget.motion_s == 1500
    capped = JobBudget.for_audio(600)  # 1800 + 72000 s, capped at the maximum
    assert capped.soft_s == 3600 and capped.stream_s == 3600
    assert JobBudget.for_audio(None).soft_s == 3600
