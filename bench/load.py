"""Many jobs at once: N jobs submitted together against W workers and R restore replicas.

Lite engines and short audio, so the figures measure the orchestration (queueing, stream
limits, retries, fan-out), not the networks. Every server is given a small stream limit so
that jobs collide: a server at its limit answers RESOURCE_EXHAUSTED, the restore fan-out
re-sends the chunk to another replica, other stages retry the job with backoff. Each job
has its own audio length and card, and its output is checked against them. The part
``load`` of ``python -m bench`` (``--load JOBS,WORKERS,REPLICAS,STREAMS``).

Needs Redis (TALKINGHEAD_BENCH_REDIS, default redis://127.0.0.1:6379/13; flushed first).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from talkinghead.compositor import probe
from talkinghead.local_stack import LocalStack
from talkinghead.orchestrator.celery_app import make_app
from talkinghead.services.common.audio import write_wav

FPS = 25.0
NOTE = ("Lite engines, 1-1.8 s of audio per job. Latency counts from the moment all jobs were "
        "submitted, so it includes queueing. Every server had the stream limit shown; "
        "RESOURCE_EXHAUSTED answers were retried (restore chunks on the other replica, other "
        "stages by retrying the job with backoff).")


@dataclass
class LoadReport:
    jobs: int
    workers: int
    replicas: int
    max_streams: int
    succeeded: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # job id -> reason
    wrong_outputs: dict[str, str] = field(default_factory=dict)  # job id -> what is wrong
    wall_s: float = 0.0
    latency_s: list[float] = field(default_factory=list)  # submission to result, per job
    job_retries: int = 0  # task retries (RESOURCE_EXHAUSTED etc.), from the workers' logs
    resource_exhausted: dict[str, int] = field(default_factory=dict)  # per server
    max_streams_seen: dict[str, int] = field(default_factory=dict)  # per server, sampled

    @property
    def jobs_per_minute(self) -> float:
        return 60.0 * self.succeeded / self.wall_s if self.wall_s else 0.0

    def percentile(self, q: float) -> float:
        values = sorted(self.latency_s)
        return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0

    def summary(self) -> dict:
        out = asdict(self)
        out.pop("latency_s")
        out.update(jobs_per_minute=round(self.jobs_per_minute, 1),
                   latency_p50_s=round(self.percentile(0.5), 2),
                   latency_p95_s=round(self.percentile(0.95), 2),
                   latency_mean_s=round(statistics.fmean(self.latency_s), 2)
                   if self.latency_s else 0.0)
        return out


def _scrape(port: int) -> dict[str, float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "talkinghead_streams_in_flight":
                values["streams"] = values.get("streams", 0) + s.value
            elif s.name == "talkinghead_requests_total" and s.labels.get("code") == \
                    "RESOURCE_EXHAUSTED":
                values["exhausted"] = values.get("exhausted", 0) + s.value
    return values


def run_load(redis_url: str, work_dir: Path, jobs: int = 20, workers: int = 2, replicas: int = 2,
             max_streams: int = 1, timeout: float = 600.0, queue: str = "load") -> LoadReport:
    """Start the servers and workers, submit ``jobs`` at once, wait, check every output."""
    demo = resources.files("talkinghead.assets.demo")
    card = json.loads((demo / "card.json").read_text())
    speech = _speech(demo)
    report = LoadReport(jobs, workers, replicas, max_streams)
    limit = ["--max-streams", str(max_streams)]
    stack = LocalStack(work_dir / "logs", engine="lite", restore_replicas=replicas,
                       with_metrics=True,
                       server_args={"motion": limit, "lipsync": limit, "restore": limit})
    env = {"TALKINGHEAD_BROKER_URL": redis_url, "TALKINGHEAD_RESULT_BACKEND": redis_url,
           "TALKINGHEAD_RETRY_BASE_SECONDS": "0.5", "TALKINGHEAD_MAX_RETRIES": "10",
           # cold: the first jobs render the presenter's motion clip, at the same moment
           "TALKINGHEAD_CACHE_DIR": str(work_dir / "motion-cache")}
    with stack:
        procs = [stack.start_worker(f"load-worker-{i}", env, "--queues", queue)
                 for i in range(workers)]
        app = make_app(redis_url, redis_url)
        specs, expected_frames = [], {}
        for i in range(jobs):
            seconds = 1.0 + 0.2 * (i % 5)  # each job its own length, checked at the end
            samples = speech[: int(seconds * 16000)]
            audio = work_dir / f"speech_{i}.wav"
            write_wav(audio, samples)
            job_id = f"load-{os.getpid()}-{i}"
            specs.append({
                "job_id": job_id, "face": str(demo / "face.jpg"), "audio": str(audio),
                "card": {**card, "title": f"{card['title']} #{i}"},
                "output": str(work_dir / "out" / f"{i}.mp4"),
                "options": {"restore_chunk_frames": 8},
            })
            expected_frames[job_id] = round(seconds * FPS)
        (work_dir / "out").mkdir(exist_ok=True)
        _wait_workers_ready(app, workers)
        start = time.monotonic()
        pending = {s["job_id"]: app.send_task("talkinghead.render", args=[s], queue=queue,
                                              task_id=s["job_id"]) for s in specs}
        while pending and time.monotonic() - start < timeout:
            for port_name, port in stack.metrics_ports.items():
                streams = int(_scrape(port).get("streams", 0))
                report.max_streams_seen[port_name] = max(
                    report.max_streams_seen.get(port_name, 0), streams)
            for job_id, result in list(pending.items()):
                if result.state in ("SUCCESS", "FAILURE"):
                    report.latency_s.append(time.monotonic() - start)
                    if result.state == "SUCCESS":
                        report.succeeded += 1
                        _check_output(report, job_id, result.result, expected_frames[job_id])
                    else:
                        report.failed[job_id] = str(result.result)
                    del pending[job_id]
            time.sleep(0.1)
        report.wall_s = time.monotonic() - start
        for job_id in pending:
            report.failed[job_id] = "still running at the timeout"
        for port_name, port in stack.metrics_ports.items():
            report.resource_exhausted[port_name] = int(_scrape(port).get("exhausted", 0))
        for proc in procs:
            proc.stop()
            report.job_retries += proc.log_path.read_text().count("transient failure")
    return report


def _speech(demo):
    from talkinghead.services.common.audio import decode_audio_file

    return decode_audio_file(Path(str(demo / "speech.wav")))


def _wait_workers_ready(app, workers: int, timeout: float = 60.0) -> None:
    """Submit only once every worker listens, so the jobs really meet all of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=1.0) or []
        if len(replies) >= workers:
            return
    raise RuntimeError(f"only {len(replies)} of {workers} workers answered a ping")


def _check_output(report: LoadReport, job_id: str, result: dict, frames: int) -> None:
    try:
        info = probe(Path(result["output"]))
    except Exception as exc:  # noqa: BLE001 - recorded as a wrong output
        report.wrong_outputs[job_id] = f"unreadable: {exc}"
        return
    problems = []
    if result["frames"] != frames:
        problems.append(f"{result['frames']} frames, expected {frames}")
    if abs(info.duration_s - frames / FPS) > 0.08:
        problems.append(f"lasts {info.duration_s:.2f}s, expected {frames / FPS:.2f}s")
    if (info.width, info.height) != (1920, 1080) or not info.has_audio:
        problems.append(f"{info.width}x{info.height}, audio {info.has_audio}")
    if problems:
        report.wrong_outputs[job_id] = "; ".join(problems)


def redis_url() -> str | None:
    """TALKINGHEAD_BENCH_REDIS (default db 13 on the local Redis), flushed; None when no
    Redis answers there."""
    import redis

    url = os.environ.get("TALKINGHEAD_BENCH_REDIS", "redis://127.0.0.1:6379/13")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).flushdb()
    except redis.RedisError:
        return None
    return url


def measure(url: str, jobs: int = 20, workers: int = 2, replicas: int = 2,
            max_streams: int = 1) -> LoadReport:
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        report = run_load(url, Path(tmp), jobs, workers, replicas, max_streams)
    print(json.dumps(report.summary(), indent=2), flush=True)
    return report


def table(report: LoadReport) -> list[str]:
    figures = report.summary()
    return [
        "| jobs | workers | restore replicas | stream limit per server | succeeded | wrong outputs "
        "| wall s | jobs/min | latency p50 / p95 s | job retries | RESOURCE_EXHAUSTED per server "
        "| most streams seen per server |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|",
        f"| {report.jobs} | {report.workers} | {report.replicas} | {report.max_streams} "
        f"| {report.succeeded} | {len(report.wrong_outputs)} | {report.wall_s:.1f} "
        f"| {report.jobs_per_minute:.1f} | {figures['latency_p50_s']} / {figures['latency_p95_s']} "
        f"| {report.job_retries} | {_pairs(report.resource_exhausted)} "
        f"| {_pairs(report.max_streams_seen)} |",
    ]


def _pairs(values: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(values.items()))
