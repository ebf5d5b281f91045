"""Helpers for tests that drive real Celery workers: submit, watch states, read metrics."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


def job(assets_dir: Path, demo_face: Path, demo_card: dict, out: Path, **changes) -> dict:
    """A job spec for the demo face, 3.2 s of speech and the demo card."""
    spec = {
        "face": str(demo_face),
        "audio": str(assets_dir / "speech_3s.wav"),
        "card": demo_card,
        "output": str(out),
        "options": {"restore_chunk_frames": 8},
    }
    spec.update(changes)
    return spec


def submit_and_wait(app, spec: dict, timeout: float = 240.0, queue: str | None = None):
    """Submit, poll until the job ends; (final AsyncResult, progress snapshots seen)."""
    result = app.send_task("talkinghead.render", args=[spec], task_id=spec.get("job_id"),
                           queue=queue)
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = result.state
        if state == "PROGRESS" and isinstance(result.info, dict):
            seen.append(result.info)
        if state in ("SUCCESS", "FAILURE", "REVOKED"):
            return result, seen
        time.sleep(0.1)
    raise AssertionError(f"job still {result.state} after {timeout}s")


def wait_until(predicate, timeout: float, what: str, poll: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def frames_done(result, stage: str) -> int:
    """Frames ``stage`` has finished, from the task's PROGRESS state (0 before)."""
    info = result.info
    if result.state != "PROGRESS" or not isinstance(info, dict):
        return 0
    return int(info.get("stages", {}).get(stage, {}).get("done", 0))


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """A server's Prometheus metrics: {(sample name, sorted labels): value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(port: int, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        value for (sample, sample_labels), value in scrape(port).items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


def child_pids(pid: int) -> list[int]:
    """The direct children of a process (from /proc), e.g. a Celery worker's pool."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children
