"""The Celery application: Redis in production, an embedded default that needs no server.

Broker and result backend come from ``TALKINGHEAD_BROKER_URL`` and
``TALKINGHEAD_RESULT_BACKEND`` (e.g. ``redis://host:6379/0``). With neither set, both live
in a folder on disk (kombu's filesystem transport and Celery's file result backend), so
the demo and a single machine need nothing running. That folder is
``TALKINGHEAD_STATE_DIR`` (default ``~/.cache/talkinghead/celery``); producer and worker
must share it.
"""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery, current_app, signals

from talkinghead.orchestrator.time_budget import max_job_seconds


def visibility_timeout_seconds() -> float:
    """How long Redis waits before handing an unacknowledged job to another worker.

    It must exceed the longest job (else a slow job would run twice), so it defaults to
    ``TALKINGHEAD_MAX_JOB_SECONDS`` plus an hour. A job whose worker died is redelivered
    after this long; with short jobs, a shorter ``TALKINGHEAD_VISIBILITY_TIMEOUT_SECONDS``
    recovers sooner.
    """
    default = max_job_seconds() + 3600
    return float(os.environ.get("TALKINGHEAD_VISIBILITY_TIMEOUT_SECONDS", str(default)))


def result_retries() -> float:
    """How many times a client retries a result store read or write that failed for want of
    a connection (``TALKINGHEAD_RESULT_RETRIES``, default 10: about 15 s, at most 30 s, of
    back-off), so a Redis restart does not break ``talkinghead submit --wait``. A worker's
    pool process retries a job's final state without limit (see ``_keep_results``)."""
    return float(os.environ.get("TALKINGHEAD_RESULT_RETRIES", "10"))


def embedded_state_dir() -> Path:
    default = Path.home() / ".cache" / "talkinghead" / "celery"
    return Path(os.environ.get("TALKINGHEAD_STATE_DIR", default))


def is_embedded() -> bool:
    return not (
        os.environ.get("TALKINGHEAD_BROKER_URL") or os.environ.get("TALKINGHEAD_RESULT_BACKEND")
    )


def make_app(broker: str | None = None, backend: str | None = None) -> Celery:
    """The app for the given broker/backend, by default those of the environment."""
    broker = broker or os.environ.get("TALKINGHEAD_BROKER_URL")
    backend = backend or os.environ.get("TALKINGHEAD_RESULT_BACKEND")
    transport_options: dict = {}
    if not (broker or backend):
        state = embedded_state_dir()
        queue_dir, results_dir = state / "queue", state / "results"
        for folder in (queue_dir, results_dir):
            folder.mkdir(parents=True, exist_ok=True)
        broker = "filesystem://localhost/"
        backend = f"file://{results_dir}"
        transport_options = {
            "data_folder_in": str(queue_dir),
            "data_folder_out": str(queue_dir),
            "control_folder": str(state / "control"),
            "store_processed": False,
        }
    elif broker and not backend:
        backend = broker if broker.startswith(("redis://", "rediss://")) else None
    if broker and broker.startswith(("redis://", "rediss://")):
        # An unacknowledged job is redelivered after this long: it must exceed the longest
        # job, or a slow job would be run twice.
        visibility = visibility_timeout_seconds()
        transport_options = {
            "visibility_timeout": visibility,
            # How often a worker looks for jobs whose worker died (one cheap Redis query);
            # kombu's default looks every 100 s.
            "unacked_restore_interval": max(1.0, min(10.0, visibility / 4)),
            "unacked_restore_throttle": 1,
        }
    app = Celery("talkinghead", broker=broker, backend=backend)
    app.conf.update(
        broker_transport_options=transport_options,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],  # never pickle: task arguments come from other systems
        task_track_started=True,
        result_extended=True,
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        broker_connection_retry_on_startup=True,
        # A lost broker connection (Redis restarted) does not stop running jobs: they go on,
        # the worker reconnects, and acknowledges them when they end.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # A result store read or write that fails for want of a connection is retried with
        # exponential back-off (0.2 s doubling to 5 s, jittered) instead of failing at once.
        result_backend_always_retry=True,
        result_backend_max_retries=result_retries(),
        result_backend_base_sleep_between_retries_ms=100,
        result_backend_max_sleep_between_retries_ms=5000,
        worker_hijack_root_logger=False,
        result_expires=7 * 24 * 3600,
        # Each job gets limits from its audio length (job_request.py); these are the cap.
        task_soft_time_limit=max_job_seconds(),
        task_time_limit=max_job_seconds() + 300,
        # Task events, for Flower and `celery events`.
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    app.conf.include = ["talkinghead.orchestrator.tasks"]
    return app


@signals.worker_process_init.connect
def _keep_results(**_) -> None:
    """In a worker's pool process a job's final state is retried until it is stored.

    A job whose result cannot be stored must not be acknowledged as done: this process
    waits for the result store (Redis) to come back and stores it then. Should the store
    stay down past the job's hard time limit, the pool process is killed and the job,
    never acknowledged, is delivered again (``task_reject_on_worker_lost``, or the
    visibility timeout when the broker is down too). The worker's main process keeps the
    bounded retries: it must go on serving the broker connection.
    """
    application = current_app
    application.conf.result_backend_max_retries = float("inf")
    application.backend.max_retries = float("inf")  # the instance the task tracer holds


@signals.worker_init.connect
def _keep_results_without_processes(sender=None, **_) -> None:
    """The same for a worker whose jobs run in its own process (``--pool threads|solo``):
    backends made from now on (one per job thread) retry without limit; with ``solo`` the
    main thread runs the jobs, so its own backend does too."""
    pool = getattr(sender, "pool_cls", None)  # "threads", or celery.concurrency.thread's
    name = (pool if isinstance(pool, str) else getattr(pool, "__module__", "")) or ""
    if not any(kind in name for kind in ("thread", "solo")):
        return
    sender.app.conf.result_backend_max_retries = float("inf")
    if "solo" in name:
        sender.app.backend.max_retries = float("inf")


app = make_app()
