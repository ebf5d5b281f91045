"""Start the whole system on this machine: three model servers (and a Celery worker).

Used by ``talkinghead demo``, by ``talkinghead render`` when no servers are named, and by the
end-to-end tests. Everything runs as real processes on loopback, exactly as in production,
only on one machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from talkinghead.orchestrator.stage_clients import StageTargets, open_channel, wait_for_serving
from talkinghead.services.stages import LOOPBACK, stages


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "talkinghead.cli", *args]


# What a server's log says when another process took its port between our pick and its bind
# (a free port is only free until someone binds it: outgoing connections take ports from the
# same ephemeral range).
BIND_FAILURES = ("Failed to bind", "cannot bind", "Address already in use")
BOUND_MARK = "listening on"  # the server's log line once its port is bound
BIND_ATTEMPTS = 5


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log_path: Path
    port: int = 0  # a server's gRPC port

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
        if self.popen.poll() is None:
            # The main process only: a server drains, a Celery worker shuts down warm and
            # stops its own pool children.
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
        return self.popen.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# Long enough for a restore replica that compiles GFPGAN at warm-up on a busy CPU (--compile
# auto: one to two minutes on 2 cores, more when shared) after loading its weights.
SERVING_TIMEOUT = 600.0


@dataclass
class LocalStack:
    """Model servers (and optionally a worker) as child processes; a context manager."""

    log_dir: Path
    engine: str = "lite"
    restore_replicas: int = 1
    with_worker: bool = False
    worker_env: dict[str, str] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)
    targets: StageTargets | None = None
    ports: dict[str, int] = field(default_factory=dict)
    with_metrics: bool = False  # give each server a Prometheus port (see metrics_ports)
    server_args: dict[str, list[str]] = field(default_factory=dict)  # per stage: extra flags
    metrics_ports: dict[str, int] = field(default_factory=dict)  # server name -> port
    # server name -> CPU list for `taskset -c` (e.g. {"restore-0": "0", "restore-1": "1"}):
    # replicas pinned to their own cores, as an operator runs them on a many-core host
    cpu_sets: dict[str, str] = field(default_factory=dict)

    def start_server(self, stage: str, port: int, name: str, *extra: str) -> Process:
        """Start one model server. With ``port`` 0 a free port is picked (``.port`` says which)
        and the call returns once the server has bound it, picking again if another process
        took it first; with a given port it returns at once."""
        if port:
            return self._spawn_server(stage, port, name, extra)
        proc = self._spawn_server(stage, free_port(), name, extra)
        return self._wait_bound([(stage, proc, extra)])[0]

    def _spawn_server(self, stage: str, port: int, name: str, extra: tuple[str, ...]) -> Process:
        metrics_port = 0
        if self.with_metrics:
            metrics_port = self.metrics_ports.get(name) or free_port()
            self.metrics_ports[name] = metrics_port
        command = cli_command(
            "serve", stage, "--port", str(port), "--engine", self.engine,
            "--metrics-port", str(metrics_port), *self.server_args.get(stage, []), *extra,
        )
        if name in self.cpu_sets:
            command = ["taskset", "-c", self.cpu_sets[name], *command]
        proc = self._spawn(name, command)
        proc.port = port
        return proc

    def _wait_bound(
        self, started: list[tuple[str, Process, tuple[str, ...]]], timeout: float = 120.0
    ) -> list[Process]:
        """Wait until each server has bound its port; one that lost its port to another
        process is started again on a new one (its metrics port too)."""
        done: list[Process | None] = [None] * len(started)
        attempts = [1] * len(started)
        deadline = time.monotonic() + timeout
        while None in done:
            for i, (stage, proc, extra) in enumerate(started):
                if done[i] is not None:
                    continue
                text = proc.log_text()
                if BOUND_MARK in text:
                    done[i] = proc
                elif proc.popen.poll() is not None:
                    if not any(mark in text for mark in BIND_FAILURES) or (
                        attempts[i] >= BIND_ATTEMPTS
                    ):
                        raise RuntimeError(
                            f"{proc.name} exited with code {proc.popen.returncode}; "
                            f"its log ends:\n{proc.log_tail()}"
                        )
                    self.processes.remove(proc)
                    self.metrics_ports.pop(proc.name, None)
                    attempts[i] += 1
                    again = self._spawn_server(stage, free_port(), proc.name, extra)
                    started[i] = (stage, again, extra)
            if time.monotonic() > deadline:
                names = [p.name for (_, p, _), d in zip(started, done, strict=True) if d is None]
                raise TimeoutError(f"servers did not bind a port within {timeout:.0f}s: {names}")
            if None in done:
                time.sleep(0.05)
        return [p for p in done if p is not None]

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Process:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log_file = open(log_path, "wb")  # noqa: SIM115 - closed when the process ends
        popen = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )
        log_file.close()
        proc = Process(name, popen, log_path)
        self.processes.append(proc)
        return proc

    def server_names(self) -> dict[str, list[str]]:
        """Per stage (the stage registry's), the names of its servers: the stage's own name,
        or ``restore-0``, ``restore-1``, ... for a replicated stage."""
        return {
            stage.name: [f"{stage.name}-{i}" for i in range(self.restore_replicas)]
            if stage.replicated else [stage.name]
            for stage in stages()
        }

    def start(self, serving_timeout: float = SERVING_TIMEOUT) -> StageTargets:
        names = self.server_names()
        started = [
            (stage, self._spawn_server(stage, free_port(), name, ()), ())
            for stage, stage_names in names.items() for name in stage_names
        ]
        bound = {p.name: p.port for p in self._wait_bound(started, serving_timeout)}
        self.ports = {s.name: bound[s.name] for s in stages() if not s.replicated}
        targets: dict[str, str | tuple[str, ...]] = {}
        for stage in stages():
            addresses = [f"{LOOPBACK}:{bound[name]}" for name in names[stage.name]]
            targets[stage.name] = tuple(addresses) if stage.replicated else addresses[0]
        self.targets = StageTargets(**targets)
        self.wait_serving(serving_timeout)
        if self.with_worker:
            self.start_worker()
        return self.targets

    def worker_environment(self) -> dict[str, str]:
        assert self.targets is not None
        return {**{stage.target_env: ",".join(self._targets_of(stage.name))
                   for stage in stages()}, **self.worker_env}

    def _targets_of(self, stage: str) -> list[str]:
        assert self.targets is not None
        found = getattr(self.targets, stage)
        return [found] if isinstance(found, str) else list(found)

    def start_worker(self, name: str = "worker", env: dict[str, str] | None = None,
                     *extra: str) -> Process:
        """A Celery worker whose model servers are this stack's."""
        return self._spawn(
            name,
            cli_command("worker", "--concurrency", "1", "--hostname", f"{name}@%h", *extra),
            env={**self.worker_environment(), **(env or {})},
        )

    def wait_serving(self, timeout: float) -> None:
        pairs = [(stage.name, t) for stage in stages() for t in self._targets_of(stage.name)]
        for stage, target in pairs:
            self.check_alive()
            channel = open_channel(target)
            try:
                wait_for_serving(channel, stage, target, timeout)
            finally:
                channel.close()

    def check_alive(self) -> None:
        for proc in self.processes:
            code = proc.popen.poll()
            if code is not None:
                raise RuntimeError(
                    f"{proc.name} exited with code {code}; its log ends:\n{proc.log_tail()}"
                )

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM everything (servers drain), then SIGKILL what is left after ``timeout``."""
        for proc in self.processes:
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.processes:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.popen.wait(remaining)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait()

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
