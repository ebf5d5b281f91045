"""The operations side: the sample deploy/ files stay true to the code, and the system works
under Flower.

The compose file is checked against the real command line (every `talkinghead` command is
parsed by the CLI's own parser), the environment variables the package reads, and itself
(worker targets name services that exist, on the ports those services listen on). Its
health checks are run against real lite servers. Flower is run against a real worker and
must see it and its job.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from talkinghead.cli import build_parser
from talkinghead.local_stack import free_port
from tests.celery_jobs import job, submit_and_wait, wait_until

yaml = pytest.importorskip("yaml", reason="pyyaml is in the dev extra")

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
SOURCE_DIRS = ("talkinghead", "orchestrator", "services", "compositor")
CELERY_APP = "talkinghead.orchestrator.celery_app:app"
ENGINES = {  # `talkinghead serve --help`: auto | lite | liveportrait | wav2lip | gfpgan
    "motion": {"auto", "lite", "liveportrait"},
    "lipsync": {"auto", "lite", "wav2lip"},
    "restore": {"auto", "lite", "gfpgan"},
}
DEFAULT_PORTS = {"motion": 50051, "lipsync": 50052, "restore": 50053}


# ---------------------------------------------------------------- reading the files


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def command_of(service: dict) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def environment_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def parse_cli(name: str, command: list[str]):
    """The command's arguments through the real parser (argparse exits on a bad flag)."""
    assert command[0] == "talkinghead", command
    try:
        return build_parser().parse_args(command[1:])
    except SystemExit as exc:
        pytest.fail(f"service {name}: `{shlex.join(command)}` is refused by the CLI ({exc})")


def talkinghead_services(compose: dict) -> dict[str, object]:
    """{service name: parsed arguments} of every service that runs `talkinghead`."""
    return {
        name: parse_cli(name, command_of(service))
        for name, service in compose["services"].items()
        if command_of(service)[:1] == ["talkinghead"]
    }


def servers(compose: dict) -> dict[str, object]:
    return {n: a for n, a in talkinghead_services(compose).items() if a.command == "serve"}


def workers(compose: dict) -> dict[str, object]:
    return {n: a for n, a in talkinghead_services(compose).items() if a.command == "worker"}


def listen_port(args) -> int:
    return args.port or DEFAULT_PORTS[args.stage]


def health_code(service: dict) -> str:
    """The Python of a model server's health check (`CMD python -c CODE`)."""
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    return test[3]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# ---------------------------------------------------------------- the compose file


def test_compose_file_is_a_compose_file(compose):
    assert "services" in compose and "version" not in compose
    for name, service in compose["services"].items():
        assert "image" in service, f"{name} names no image"
    for name, service in compose["services"].items():
        for dep in service.get("depends_on") or {}:
            assert dep in compose["services"], f"{name} depends on unknown service {dep}"
        for secret in service.get("secrets") or []:
            assert secret in (compose.get("secrets") or {}), f"{name}: secret {secret} undefined"
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in (compose.get("volumes") or {}), f"{name}: volume {source}"


def test_every_talkinghead_command_parses_with_the_real_cli(compose):
    parsed = talkinghead_services(compose)
    assert {a.command for a in parsed.values()} == {"serve", "worker"}, parsed
    stages = {args.stage for args in servers(compose).values()}
    assert stages == {"motion", "lipsync", "restore"}
    for name, args in servers(compose).items():
        # A service is named after its stage (restore replicas: restore-1, restore-2, ...).
        assert name == args.stage or name.startswith(f"{args.stage}-"), (name, args.stage)
        assert args.engine in ENGINES[args.stage], (name, args.engine)
        assert args.host == "0.0.0.0", f"{name} must listen beyond loopback for the workers"
        assert args.weights == "/weights"


def test_model_servers_share_the_token_secret_and_expose_their_ports(compose):
    for name, args in servers(compose).items():
        service = compose["services"][name]
        assert args.token_file, f"{name} runs without the shared token"
        secret = Path(args.token_file)
        assert secret.parent == Path("/run/secrets"), args.token_file
        assert secret.name in (service.get("secrets") or []), f"{name} lacks {secret.name}"
        port = listen_port(args)
        metrics = port + 1000 if args.metrics_port is None else args.metrics_port
        exposed = {int(p) for p in service.get("expose") or []}
        assert {port, metrics} <= exposed, (name, port, metrics, exposed)
        code = health_code(service)
        compile(code, f"{name} health check", "exec")
        assert f"'127.0.0.1:{port}'" in code, f"{name}'s health check asks another port"
    # The worker's token comes from the same variable the secret is made from.
    secrets = compose.get("secrets") or {}
    sources = {s.get("environment") for s in secrets.values()}
    for name in workers(compose):
        token = environment_of(compose["services"][name])["TALKINGHEAD_TOKEN"]
        assert any(source and f"${{{source}" in token for source in sources), (name, token)


def test_worker_targets_name_existing_servers_on_their_ports(compose):
    by_name = servers(compose)
    restore_services = {n for n, a in by_name.items() if a.stage == "restore"}
    assert len(restore_services) >= 2
    assert workers(compose), "no worker service"
    for name, args in workers(compose).items():
        assert args.concurrency == 1 and args.pool == "prefork", name
        env = environment_of(compose["services"][name])
        wanted = {
            "TALKINGHEAD_MOTION_TARGET": "motion",
            "TALKINGHEAD_LIPSYNC_TARGET": "lipsync",
            "TALKINGHEAD_RESTORE_TARGETS": "restore",
        }
        named_restores = set()
        for variable, stage in wanted.items():
            targets = env[variable].split(",")
            assert targets and all(targets), (name, variable)
            for target in targets:
                host, _, port = target.rpartition(":")
                assert host in by_name, f"{name}: {variable} names {host}, not a service"
                assert by_name[host].stage == stage, (name, variable, host)
                assert int(port) == listen_port(by_name[host]), (name, variable, target)
                if stage == "restore":
                    named_restores.add(host)
        assert named_restores == restore_services, f"{name} leaves restore replicas out"
        assert env["TALKINGHEAD_INPUT_ROOTS"] and env["TALKINGHEAD_OUTPUT_ROOTS"]
        mounts = {v.split(":")[1] for v in compose["services"][name].get("volumes") or []}
        for variable in ("TALKINGHEAD_INPUT_ROOTS", "TALKINGHEAD_OUTPUT_ROOTS"):
            for folder in env[variable].split(":"):
                assert folder in mounts, f"{name}: {variable} {folder} is not mounted"


def test_broker_is_the_redis_service_with_append_only_file(compose):
    services = compose["services"]
    redis = services["redis"]
    command = command_of(redis)
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes", "queued jobs need AOF"
    assert command[command.index("--appendfsync") + 1] in ("everysec", "always")
    assert any(v.split(":")[1] == "/data" for v in redis["volumes"]), "AOF needs a volume"
    users = [n for n, s in services.items() if "TALKINGHEAD_BROKER_URL" in environment_of(s)]
    assert set(workers(compose)) | {"flower"} <= set(users)
    for name in users:
        env = environment_of(services[name])
        for variable in ("TALKINGHEAD_BROKER_URL", "TALKINGHEAD_RESULT_BACKEND"):
            assert re.fullmatch(r"redis://redis:6379/\d+", env[variable]), (name, env[variable])


def test_flower_service_runs_the_celery_app(compose):
    flower = compose["services"]["flower"]
    command = command_of(flower)
    assert command[:4] == ["celery", "--app", CELERY_APP, "flower"], command
    # Flower reads its options with tornado: `--port=5555`, never `--port 5555`.
    for option in command[4:]:
        assert option.startswith("--") and "=" in option, option
    module, _, attribute = CELERY_APP.partition(":")
    import importlib

    assert hasattr(importlib.import_module(module), attribute)


def test_worker_health_check_pings_its_own_node(compose):
    parser_default = build_parser().parse_args(["worker"]).hostname
    assert parser_default == "talkinghead@%h"  # %h is the container's hostname
    for name in workers(compose):
        test = compose["services"][name]["healthcheck"]["test"]
        assert test[0] == "CMD-SHELL"
        assert f"--app {CELERY_APP} inspect ping --destination talkinghead@$$HOSTNAME" in test[1]


def test_every_talkinghead_variable_in_compose_is_read_by_the_package():
    named = set(re.findall(r"TALKINGHEAD_[A-Z0-9_]+", COMPOSE.read_text()))
    assert {"TALKINGHEAD_BROKER_URL", "TALKINGHEAD_RESTORE_TARGETS", "TALKINGHEAD_TOKEN"} <= named
    source = "\n".join(
        path.read_text() for folder in SOURCE_DIRS for path in (ROOT / folder).rglob("*.py")
    )
    unread = sorted(v for v in named if not re.search(rf"\b{v}\b", source))
    assert not unread, f"the compose file sets variables nothing reads: {unread}"


# ---------------------------------------------------------------- the Dockerfile


def test_dockerfile_installs_torch_then_the_project_and_no_system_ffmpeg():
    steps = dockerfile_instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    runs = [(i, a) for i, (k, a) in enumerate(steps) if k == "RUN"]
    torch = [i for i, a in runs if re.search(r"pip install .*torch==", a)]
    project = [i for i, a in runs if re.search(r"pip install \"?'?\.(\[|\"|'|\s|$)", a)]
    assert torch and project and torch[0] < project[0], "torch must be installed first"
    torch_run = steps[torch[0]][1]
    assert "--index-url" in torch_run and "${TORCH_INDEX_URL}" in torch_run
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    makefile_torch = re.search(r"^TORCH \?= torch==(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert args["TORCH_VERSION"] == makefile_torch.group(1), "the README's torch pin"
    for _, run in runs:  # no system ffmpeg (apt, apk, a static download): the wheel brings it
        assert "ffmpeg" not in run, f"ffmpeg comes from the imageio-ffmpeg wheel: {run}"
    # The source is copied after torch (a code change does not reinstall torch), and every
    # folder the package is built from is copied.
    copies = [(i, a) for i, (k, a) in enumerate(steps) if k == "COPY"]
    assert copies and min(i for i, _ in copies) > torch[0]
    copied = {a.split()[0] for _, a in copies}
    package_dirs = set(pyproject()["tool"]["setuptools"]["package-dir"].values())
    roots = {d.split("/")[0] for d in package_dirs}
    assert roots <= copied, f"not copied: {roots - copied}"
    extras = pyproject()["project"]["optional-dependencies"]
    for extra in args.get("EXTRAS", "").split(","):
        if extra:
            assert extra in extras, f"the Dockerfile installs an unknown extra {extra}"
    assert any(d.startswith("flower") for d in extras[args["EXTRAS"]]), "flower needs ops"


# ---------------------------------------------------------------- against real processes


def run_health_check(code: str, compose_port: int, real_port: int) -> subprocess.CompletedProcess:
    code = code.replace(f"'127.0.0.1:{compose_port}'", f"'127.0.0.1:{real_port}'")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)


@pytest.mark.e2e
def test_model_server_health_checks_against_real_servers(compose, lite_stack):
    """Each compose health check, pointed at a real lite server of its stage: exit 0 while
    it is SERVING, non-zero with nothing listening."""
    real = {"motion": lite_stack.targets.motion, "lipsync": lite_stack.targets.lipsync,
            "restore": lite_stack.targets.restore[0]}
    for name, args in servers(compose).items():
        code = health_code(compose["services"][name])
        port = int(real[args.stage].rpartition(":")[2])
        done = run_health_check(code, listen_port(args), port)
        assert done.returncode == 0, (name, done.stderr[-2000:])
    done = run_health_check(code, listen_port(args), free_port())
    assert done.returncode != 0


def flower_get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
        return json.loads(reply.read().decode())


def flower_answer(port: int, path: str):
    """Flower's JSON answer, or None while it is not up or does not know the thing yet."""
    try:
        return flower_get(port, path)
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return None


@pytest.mark.e2e
def test_flower_sees_the_worker_and_the_render_task(lite_stack, redis_url, assets_dir,
                                                     demo_face, demo_card, tmp_path):
    """Flower, run as the README says, against a real worker on Redis: it lists the worker,
    and the job as `talkinghead.render` in state SUCCESS on that worker."""
    from talkinghead.orchestrator.celery_app import make_app

    env = {"TALKINGHEAD_BROKER_URL": redis_url, "TALKINGHEAD_RESULT_BACKEND": redis_url}
    worker = lite_stack.start_worker("worker-flower", env, "--queues", "flower-test")
    port = free_port()
    flower_log = open(tmp_path / "flower.log", "wb")  # noqa: SIM115 - closed below
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "--app", CELERY_APP, "flower", f"--port={port}",
         "--address=127.0.0.1"],
        stdout=flower_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, **env, "FLOWER_UNAUTHENTICATED_API": "true"},
        start_new_session=True,
    )
    try:
        def worker_alive():
            assert flower.poll() is None, (tmp_path / "flower.log").read_text()[-3000:]
            lite_stack.check_alive()
            status = flower_answer(port, "/api/workers?status=true") or {}
            return [name for name, alive in status.items()
                    if name.startswith("worker-flower@") and alive]

        # From the worker's heartbeats: Flower's event receiver is running before the job.
        names = wait_until(worker_alive, 60, "Flower to see the worker alive", poll=0.5)
        # Flower's own inspect broadcast (what its dashboard shows) lists it too; its reply
        # can miss Flower's one-second inspect timeout on a loaded machine, so ask again.
        wait_until(lambda: names[0] in (flower_answer(port, "/api/workers?refresh=true") or {}),
                   60, "Flower's inspect to list the worker", poll=0.5)

        app = make_app(redis_url, redis_url)
        out = tmp_path / "flower.mp4"
        spec = job(assets_dir, demo_face, demo_card, out, job_id="ops-flower-1")
        result, _ = submit_and_wait(app, spec, queue="flower-test", timeout=120)
        assert result.state == "SUCCESS", result.result
        assert out.is_file()

        def task_done():
            info = flower_answer(port, f"/api/task/info/{result.id}")
            return info if info and info.get("state") == "SUCCESS" else None

        info = wait_until(task_done, 20, "Flower to see the task succeed", poll=0.3)
        assert info["name"] == "talkinghead.render"
        assert info["worker"] == names[0]
        assert info["received"] and info["started"] and info["succeeded"]
        tasks = flower_get(port, "/api/tasks?taskname=talkinghead.render")
        assert result.id in tasks
    finally:
        if flower.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(flower.pid, signal.SIGTERM)
            try:
                flower.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(flower.pid, signal.SIGKILL)
                flower.wait()
        flower_log.close()
        worker.stop()
        lite_stack.processes.remove(worker)
