"""A whole job through real servers, a real Celery worker and real Redis; and the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

from talkinghead.compositor import probe
from talkinghead.local_stack import free_port
from talkinghead.orchestrator.celery_app import make_app
from talkinghead.services.common.audio import probe_duration_seconds
from talkinghead.services.common.video_files import read_video
from tests import unprivileged
from tests.celery_jobs import job, submit_and_wait

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
FPS = 25


def assert_decodes_to(video: Path, frames: int, size: tuple[int, int]) -> None:
    """``frames`` frames of ``size`` at 25 fps, counted by decoding them (not by what the
    job reported)."""
    fps, decoded = read_video(video)
    sizes = [(f.width, f.height) for f in decoded]
    assert fps == FPS
    assert len(sizes) == frames and set(sizes) == {size}


def assert_plays_as_promised(video: Path, audio: Path) -> None:
    """A 1920x1080 H.264 + AAC video as long as the speech: one frame per 1/25 s of it."""
    seconds = probe_duration_seconds(audio)
    assert seconds is not None
    info = probe(video)
    assert (info.width, info.height, info.video_codec, info.audio_codec) == (
        1920, 1080, "h264", "aac")
    assert abs(info.duration_s - seconds) < 0.1
    assert_decodes_to(video, round(seconds * FPS), (1920, 1080))


def processes_with(marker: str) -> dict[int, str]:
    """Live processes whose environment holds ``marker`` (pid -> command line)."""
    needle, found = marker.encode(), {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):  # a zombie has none
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(
                    b"\0", b" ").decode(errors="replace")
        except OSError:  # gone, or not ours to read
            continue
    return found


@contextmanager
def watching(marker: str) -> Iterator[dict[int, str]]:
    """Every process seen with ``marker`` while the block runs."""
    seen: dict[int, str] = {}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            seen.update(processes_with(marker))
            done.wait(0.25)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()


@pytest.fixture(scope="module")
def redis_worker(lite_stack, redis_url):
    env = {"TALKINGHEAD_BROKER_URL": redis_url, "TALKINGHEAD_RESULT_BACKEND": redis_url}
    worker = lite_stack.start_worker("worker-redis", env=env)
    app = make_app(redis_url, redis_url)
    try:
        yield app
    finally:
        worker.stop()
        lite_stack.processes.remove(worker)


def test_render_job_through_celery_and_redis(redis_worker, assets_dir, demo_face, demo_card,
                                             tmp_path):
    out = tmp_path / "video.mp4"
    result, seen = submit_and_wait(redis_worker, job(assets_dir, demo_face, demo_card, out,
                                                     job_id="e2e-redis-1"))
    assert result.state == "SUCCESS", result.result
    info = probe(out)
    assert (info.width, info.height) == (1920, 1080)
    assert info.video_codec == "h264" and info.pix_fmt == "yuv420p"
    assert info.has_audio and info.audio_codec == "aac"
    assert abs(info.duration_s - 3.2) < 0.1
    assert info.faststart
    assert_plays_as_promised(out, assets_dir / "speech_3s.wav")
    value = result.result
    assert value["frames"] == 80 and value["output"] == str(out)
    assert value["engines"] == {"motion": "lite", "lipsync": "lite", "restore": "lite"}
    assert sum(value["restore_chunks"].values()) == 10  # 80 frames in chunks of 8
    assert len(value["restore_chunks"]) == 2  # both replicas were offered work
    # progress was published per stage, with frames done out of total
    stages = {s["stage"] for s in seen}
    assert stages & {"lipsync", "restore", "compose"}, seen[-3:]
    last = seen[-1]["stages"]
    assert last["compose"]["total"] == 80
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"face": "not_image.jpg"}, "is not a decodable image"),
        ({"face": "no_face.png"}, "no face"),
        ({"audio": "not_audio.wav"}, "not decodable audio"),
        ({"audio": "empty.wav"}, "is empty"),
        ({"template": "moonwalk"}, "unknown template 'moonwalk'"),
        ({"card": {"title": "Engineer"}}, "card.company: Field required"),
    ],
)
def test_bad_jobs_fail_with_a_reason_and_no_output(redis_worker, assets_dir, demo_face, demo_card,
                                                   tmp_path, changes, reason):
    out = tmp_path / "bad.mp4"
    spec = job(assets_dir, demo_face, demo_card, out)
    for key, value in changes.items():
        spec[key] = str(assets_dir / value) if key in ("face", "audio") else value
    result, _ = submit_and_wait(redis_worker, spec, timeout=120)
    assert result.state == "FAILURE"
    assert reason in str(result.result)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def run_cli(*args: str, timeout: float = 300, unprivileged_user: bool = False,
            cwd: Path | None = None, env: dict[str, str] | None = None):
    cmd = [sys.executable, "-m", "talkinghead.cli", *args]
    if unprivileged_user:
        cmd = unprivileged.command(cmd)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, "TALKINGHEAD_LOG_FORMAT": "plain", **(env or {})})


@pytest.mark.skipif(not Path("/proc/self/environ").is_file(),
                    reason="finds the demo's processes through /proc (Linux)")
def test_demo_command_on_the_embedded_broker(assets_dir, tmp_path):
    """`talkinghead demo` starts servers and a worker, needs no Redis, renders the video the
    speech calls for, and leaves no process of its own running."""
    out = tmp_path / "demo" / "demo.mp4"
    marker = f"TALKINGHEAD_TEST_RUN={uuid.uuid4().hex}"  # inherited by all it starts
    name, value = marker.split("=")
    with watching(marker) as seen:
        proc = run_cli("demo", "--audio", str(assets_dir / "speech_3s.wav"), "--out", str(out),
                       env={name: value})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote" in proc.stdout and "submitted job" in proc.stderr  # rich wraps the path
    assert_plays_as_promised(out, assets_dir / "speech_3s.wav")
    # The watch saw the CLI, three servers and the worker, so it would see one left over.
    assert len(seen) >= 5, seen
    deadline = time.monotonic() + 5  # a process killed at the very end is still exiting
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:  # do not leave them to the next test
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert left == {}, f"still running after the demo exited: {left}"


def test_cli_render_refuses_bad_input_before_starting_anything(assets_dir, demo_face, tmp_path):
    out = tmp_path / "x.mp4"
    proc = run_cli("render", "--face", str(assets_dir / "not_image.jpg"), "--audio",
                   str(assets_dir / "speech_3s.wav"), "--card", str(assets_dir / "card.json"),
                   "--out", str(out), timeout=60)
    assert proc.returncode == 2
    assert "error: face image 'not_image.jpg' is not a decodable image" in proc.stderr
    assert not out.exists() and not (tmp_path / "logs").exists()

    proc = run_cli("render", "--face", str(demo_face), "--audio", str(assets_dir / "long.wav"),
                   "--card", str(assets_dir / "card.json"), "--out", str(out), timeout=60,
                   env={"TALKINGHEAD_MAX_AUDIO_SECONDS": "5"})
    assert proc.returncode == 2
    assert "error: audio file 'long.wav' is longer than the 5 s limit" in proc.stderr

    bad_card = tmp_path / "card.json"
    bad_card.write_text('{"title": "x"}')
    proc = run_cli("render", "--face", str(demo_face), "--audio", str(assets_dir / "silence.wav"),
                   "--card", str(bad_card), "--out", str(out), timeout=60)
    assert proc.returncode == 2
    assert "card.company: Field required" in proc.stderr


def test_cli_unwritable_output_folder():
    """A user who may not write the output folder is refused with exit 2 (as nobody when
    the tests run as root, as CI does)."""
    from importlib import resources

    demo = resources.files("talkinghead.assets.demo")
    with unprivileged.shared_dir() as shared:
        locked = shared / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        proc = run_cli("render", "--face", str(demo / "face.jpg"), "--audio",
                       str(demo / "speech.wav"), "--card", str(demo / "card.json"),
                       "--out", str(locked / "out.mp4"), unprivileged_user=True, cwd=shared,
                       timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert f"output folder '{locked}' is not writable" in proc.stderr
        assert list(locked.iterdir()) == []


def stack_flags(stack) -> list[str]:
    t = stack.targets
    return ["--motion", t.motion, "--lipsync", t.lipsync, "--restore", ",".join(t.restore)]


def test_cli_render_against_running_servers(lite_stack, assets_dir, demo_face, tmp_path):
    """Renders; a card character no font has (a private-use one) is named on the console."""
    out = tmp_path / "render.mp4"
    card = json.loads((assets_dir / "card.json").read_text())
    card["company"] += " \ue000"
    (tmp_path / "card.json").write_text(json.dumps(card))
    proc = run_cli("render", "--face", str(demo_face), "--audio", str(assets_dir / "speech_3s.wav"),
                   "--card", str(tmp_path / "card.json"), "--out", str(out),
                   *stack_flags(lite_stack), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"wrote {out}" in proc.stdout
    assert "no font has U+E000" in proc.stdout
    assert_plays_as_promised(out, assets_dir / "speech_3s.wav")


def test_cli_render_photo_without_a_face(lite_stack, assets_dir, tmp_path):
    out = tmp_path / "noface.mp4"
    proc = run_cli("render", "--face", str(assets_dir / "no_face.png"), "--audio",
                   str(assets_dir / "speech_3s.wav"), "--card", str(assets_dir / "card.json"),
                   "--out", str(out), *stack_flags(lite_stack), timeout=120)
    assert proc.returncode == 2
    assert "motion server: INVALID_ARGUMENT: no face found in the photo" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_submit_wait_and_status(redis_worker, redis_url, assets_dir, demo_face, tmp_path):
    env = {"TALKINGHEAD_BROKER_URL": redis_url, "TALKINGHEAD_RESULT_BACKEND": redis_url}
    out = tmp_path / "submitted.mp4"
    proc = run_cli("submit", "--face", str(demo_face), "--audio", str(assets_dir / "speech_3s.wav"),
                   "--card", str(assets_dir / "card.json"), "--out", str(out), "--no-restore",
                   "--job-id", "cli-submit-1", "--wait", env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0] == "cli-submit-1"
    assert_plays_as_promised(out, assets_dir / "speech_3s.wav")
    status = run_cli("status", "cli-submit-1", env=env, timeout=60)
    assert status.returncode == 0
    payload = json.loads(status.stdout)
    assert payload["state"] == "SUCCESS"
    assert payload["info"]["frames"] == 80
    assert payload["info"]["restore_chunks"] == {}  # --no-restore skipped the stage


def test_cli_call_each_stage(lite_stack, assets_dir, demo_face, tmp_path):
    t = lite_stack.targets
    clip = tmp_path / "clip.mp4"
    proc = run_cli("call", "motion", "--target", t.motion, "--face", str(demo_face),
                   "--out", str(clip), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert probe(clip).width == 512 and not probe(clip).has_audio
    synced = tmp_path / "synced.mp4"
    proc = run_cli("call", "lipsync", "--target", t.lipsync, "--video", str(clip), "--audio",
                   str(assets_dir / "speech_3s.wav"), "--out", str(synced), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert probe(synced).has_audio  # every frame of the clip, mouth redrawn, with the speech
    assert_decodes_to(synced, sum(1 for _ in read_video(clip)[1]), (512, 512))
    restored = tmp_path / "restored.png"
    proc = run_cli("call", "restore", "--target", t.restore[0], "--image", str(demo_face),
                   "--out", str(restored), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, after = cv2.imread(str(demo_face)), cv2.imread(str(restored))
    assert after is not None and after.shape == before.shape  # the photo, restored
    assert not np.array_equal(after, before)
    proc = run_cli("call", "motion", "--target", t.motion, "--face", str(demo_face),
                   "--template", "moonwalk", "--out", str(tmp_path / "x.mp4"), timeout=60)
    assert proc.returncode == 2
    assert "NOT_FOUND" in proc.stderr and "moonwalk" in proc.stderr


def test_job_waits_out_a_lipsync_server_that_is_down(lite_stack, redis_url, assets_dir,
                                                     demo_face, demo_card, tmp_path):
    """The lipsync server is down when the job starts: the task retries with backoff (state
    RETRY), the server comes up, the job completes with one output."""
    port = free_port()
    env = {"TALKINGHEAD_BROKER_URL": redis_url, "TALKINGHEAD_RESULT_BACKEND": redis_url,
           "TALKINGHEAD_LIPSYNC_TARGET": f"127.0.0.1:{port}",
           "TALKINGHEAD_SERVING_TIMEOUT": "2", "TALKINGHEAD_RETRY_BASE_SECONDS": "1",
           "TALKINGHEAD_MAX_RETRIES": "6"}
    worker = lite_stack.start_worker("worker-retry", env, "--queues", "retry-test")
    app = make_app(redis_url, redis_url)
    out = tmp_path / "retried.mp4"
    spec = job(assets_dir, demo_face, demo_card, out, job_id="e2e-retry-1")
    try:
        result = app.send_task("talkinghead.render", args=[spec], task_id=spec["job_id"],
                               queue="retry-test")
        deadline = time.monotonic() + 60
        while result.state != "RETRY" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert result.state == "RETRY"
        server = lite_stack.start_server("lipsync", port, "lipsync-late")
        deadline = time.monotonic() + 120
        while result.state not in ("SUCCESS", "FAILURE") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert result.state == "SUCCESS", result.result
        assert list(tmp_path.iterdir()) == [out]
        assert_plays_as_promised(out, assets_dir / "speech_3s.wav")
    finally:
        worker.stop()
        lite_stack.processes.remove(worker)
        if "server" in locals():
            server.stop()
            lite_stack.processes.remove(server)
