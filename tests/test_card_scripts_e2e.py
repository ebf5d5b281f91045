"""A job whose card is in Arabic, Chinese, Japanese, Devanagari and emoji, with one character
no font has, through real lite servers, a real Celery worker and its own real Redis: it
succeeds, its result names the missing character and the worker's log warns about it, with
the job's id (#14 item 5)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from talkinghead.local_stack import free_port
from talkinghead.orchestrator.celery_app import make_app
from tests.celery_jobs import job, submit_and_wait

pytestmark = pytest.mark.e2e

CARD = {
    "title": "مهندس برمجيات 高级软件工程师 🚀",
    "company": "株式会社テクノロジー",
    "location": "मुंबई, भारत",
    "skills": ["Python 🐍", "数据库", "x\ue000"],
}


@pytest.fixture
def own_redis(tmp_path):
    """A Redis of this test's own (the shared one is left alone)."""
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        import redis

        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(10)


def test_card_in_many_scripts_renders_and_reports_the_missing_character(
    lite_stack, own_redis, assets_dir, demo_face, tmp_path
):
    env = {
        "TALKINGHEAD_BROKER_URL": own_redis,
        "TALKINGHEAD_RESULT_BACKEND": own_redis,
        # Only the fonts the package ships or depends on: the same result on every machine.
        "TALKINGHEAD_SYSTEM_FONTS": "0",
    }
    worker = lite_stack.start_worker("worker-scripts", env=env)
    try:
        out = tmp_path / "scripts.mp4"
        result, _ = submit_and_wait(make_app(own_redis, own_redis),
                                    job(assets_dir, demo_face, CARD, out, job_id="e2e-scripts-1"))
        assert result.state == "SUCCESS", result.result
        assert result.result["missing_glyphs"] == ["U+E000"]
        assert out.is_file()
        log_path = lite_stack.log_dir / "worker-scripts.log"
        warnings = []
        for line in log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("missing_glyphs"):
                warnings.append(record)
        assert [(w["level"], w["job"], w["missing_glyphs"]) for w in warnings] == [
            ("warning", "e2e-scripts-1", ["U+E000"])]
    finally:
        worker.stop()
        lite_stack.processes.remove(worker)
