"""A restore replica dies under a real Celery worker (issue #14, item 1): real Redis, lite
servers as real processes, SIGKILL of one of two restore replicas in the middle of the
restore stage. The running job completes with one output (no job retry), and a new job
submitted while the replica is still dead completes too (a job needs one SERVING restore
replica, not all). The worker's log says which replica is out, on lines that name the job.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from talkinghead.compositor import probe
from talkinghead.local_stack import LocalStack
from talkinghead.orchestrator.celery_app import make_app
from tests.celery_jobs import frames_done, job, submit_and_wait, wait_until

pytestmark = pytest.mark.e2e

QUEUE = "replica-down-test"


def log_lines(path: Path) -> list[dict]:
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue  # not one of ours (a library's plain line)
    return lines


def test_dead_restore_replica_fails_no_job(redis_url, tmp_path, assets_dir, demo_face,
                                           demo_card):
    stack = LocalStack(tmp_path / "logs", engine="lite", restore_replicas=2)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with stack:
        survivor, victim_target = stack.targets.restore
        victim = next(p for p in stack.processes if p.name == "restore-1")
        worker = stack.start_worker(
            "worker-replica-down",
            {"TALKINGHEAD_BROKER_URL": redis_url, "TALKINGHEAD_RESULT_BACKEND": redis_url,
             "TALKINGHEAD_RETRY_BASE_SECONDS": "1"},
            "--queues", QUEUE,
        )
        app = make_app(redis_url, redis_url)

        # 1. 20 s of speech (500 frames); restore-1 is SIGKILLed at restore 150/500.
        first = out_dir / "first.mp4"
        spec = job(assets_dir, demo_face, demo_card, first, job_id="replica-down-1",
                   audio=str(assets_dir / "speech_20s.wav"))
        result = app.send_task("talkinghead.render", args=[spec], task_id=spec["job_id"],
                               queue=QUEUE)
        wait_until(lambda: frames_done(result, "restore") >= 150, 180, "restore at 150",
                   poll=0.05)
        os.killpg(victim.popen.pid, signal.SIGKILL)
        assert victim.popen.wait(10) == -signal.SIGKILL
        states = set()

        def ended():
            states.add(result.state)
            return result.state in ("SUCCESS", "FAILURE")

        wait_until(ended, 240, "the first job to end", poll=0.1)
        assert result.state == "SUCCESS", result.result
        assert "RETRY" not in states, states  # completed in its first attempt
        done = result.result
        assert victim_target in done["restore_replicas_out"], done
        assert done["restore_chunks"][survivor] > 0
        assert probe(first).duration_s == pytest.approx(20.0, abs=0.1)
        assert sorted(out_dir.iterdir()) == [first]  # one output, no partial file

        # 2. A new job while restore-1 is still dead: it needs one SERVING replica.
        second = out_dir / "second.mp4"
        result2, _ = submit_and_wait(
            app, job(assets_dir, demo_face, demo_card, second, job_id="replica-down-2"),
            timeout=180, queue=QUEUE)
        assert result2.state == "SUCCESS", result2.result
        done2 = result2.result
        assert done2["restore_chunks"] == {survivor: done2["restore_chunks"][survivor],
                                           victim_target: 0}
        assert done2["restore_chunks"][survivor] == 10  # 80 frames in chunks of 8
        assert "UNAVAILABLE" in done2["restore_replicas_out"][victim_target]
        assert probe(second).duration_s == pytest.approx(3.2, abs=0.1)
        assert sorted(out_dir.iterdir()) == [first, second]

        # 3. The worker's log: which replica is out, on lines naming their job.
        lines = log_lines(worker.log_path)
        fanout = [x for x in lines if x.get("logger", "").endswith("restore_fanout")]
        assert fanout, lines[-20:]
        assert {x["job"] for x in fanout} == {"replica-down-1", "replica-down-2"}, fanout
        out_lines = [x for x in fanout if "taken out of rotation" in x["msg"]]
        assert {x["job"] for x in out_lines} == {"replica-down-1", "replica-down-2"}
        assert all(victim_target in x["msg"] for x in out_lines)
        at_start = [x for x in lines if "out of rotation for now" in x.get("msg", "")]
        assert [x["job"] for x in at_start] == ["replica-down-2"], at_start
        assert victim_target in at_start[0]["msg"]
        assert sum("job received" in x.get("msg", "") for x in lines) == 2
