"""``talkinghead``: serve the models, run workers, render and submit jobs, call one stage.

  talkinghead demo                       render the bundled example to out/demo.mp4
  talkinghead serve motion|lipsync|restore --port P [--engine auto|lite|…] [--device …]
  talkinghead worker                     a Celery worker (broker from TALKINGHEAD_BROKER_URL)
  talkinghead render --face F --audio A --card C --out O
  talkinghead submit --face F --audio A --card C --out O [--wait]
  talkinghead status JOB
  talkinghead call motion|lipsync|restore …   one stage, directly over gRPC
  talkinghead loop VIDEO --audio A -o OUT   the ping-pong loop, as a file
  talkinghead templates                  the bundled driving templates
  talkinghead template extract VIDEO -o NAME.npz   a template from a driving video
  talkinghead weights list|verify|write-deterministic --weights DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib import resources
from pathlib import Path

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
DEMO_ASSETS = "talkinghead.assets.demo"


class CliError(Exception):
    """Shown to the user as 'error: …' with a non-zero exit."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- serve / worker


def weights_dir(flag: str | None) -> Path | None:
    """--weights, else TALKINGHEAD_WEIGHTS_DIR, else none (engines fall back to lite)."""
    value = flag or os.environ.get("TALKINGHEAD_WEIGHTS_DIR")
    return Path(value).expanduser() if value else None


def cmd_serve(args: argparse.Namespace) -> int:
    from talkinghead.services.common.logs import configure_logging
    from talkinghead.services.common.security import read_token
    from talkinghead.services.common.server import ServerSettings
    from talkinghead.services.stages import stage as stage_named

    stage = stage_named(args.stage)
    configure_logging(f"{args.stage}-server")
    if args.engine not in stage.engine_names:
        raise CliError(f"--engine {args.engine!r} is not a {stage.name} engine; choose from "
                       f"{', '.join(stage.engine_names)}")
    if not 0 <= args.threads <= 1024:
        raise CliError(f"--threads must be within 0..1024 (0: torch's choice); got {args.threads}")
    for flag in stage.flags:  # --paste-mask-cache-mb, --face-input-cache-mb
        value = getattr(args, flag.dest)
        if flag.dest.endswith("_cache_mb") and not 0 <= value <= 1 << 20:
            raise CliError(f"{flag.flag} must be within 0..{1 << 20} MiB (0: no cache); "
                           f"got {value}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    port = args.port or stage.port
    settings = ServerSettings(
        stage=args.stage,
        host=args.host,
        port=port,
        metrics_port=port + 1000 if args.metrics_port is None else args.metrics_port,
        engine=args.engine,
        device=args.device,
        weights_dir=weights_dir(args.weights),
        max_message_bytes=args.max_message_mb * 1024 * 1024,
        max_streams=args.max_streams,
        grace_seconds=args.grace,
        batch_size=args.batch_size,
        half=args.half,
        options={flag.dest: getattr(args, flag.dest) for flag in stage.flags},
        token=read_token(args.token_file),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CliError("give both --tls-cert and --tls-key, or neither")
    stage.build_server(settings).run_until_signalled()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from talkinghead.services.stages import stages

    for stage in stages():
        if getattr(args, stage.name):
            os.environ[stage.target_env] = getattr(args, stage.name)
    from talkinghead.orchestrator.celery_app import app, is_embedded
    from talkinghead.services.common.logs import configure_logging

    configure_logging("worker")
    argv = [
        "worker", f"--loglevel={args.loglevel}", f"--concurrency={args.concurrency}",
        f"--pool={args.pool}", "--hostname", args.hostname,
    ]
    if args.queues:
        argv += ["--queues", args.queues]
    if args.state_db:  # revoked job ids survive a restart of this worker
        argv += ["--statedb", args.state_db]
    if is_embedded():  # the filesystem transport has no broadcast: no gossip/mingle/heartbeat
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    app.worker_main(argv)
    return 0


# ---------------------------------------------------------------- jobs


def load_card(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CliError(f"card file {str(path)!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise CliError(f"card file {str(path)!r} is not valid JSON: {exc}") from None


def spec_from_args(args: argparse.Namespace):
    from pydantic import ValidationError

    from talkinghead.motion_flags import motion_values
    from talkinghead.orchestrator.jobspec import JobSpec, describe_validation_error

    raw = {
        "face": str(Path(args.face).resolve()),
        "audio": str(Path(args.audio).resolve()),
        "card": load_card(args.card),
        "output": str(Path(args.out).resolve()),
        "template": args.template,
        "options": {**motion_values(args), "restore": not args.no_restore},
    }
    if args.logo:
        raw["logo"] = str(Path(args.logo).resolve())
    if getattr(args, "job_id", None):
        raw["job_id"] = args.job_id
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise CliError(describe_validation_error(exc)) from None


def print_result(result: dict) -> None:
    from rich.console import Console

    console = Console()
    console.print(f"[bold green]wrote[/] {result['output']}  "
                  f"({result['duration_s']:.2f} s, {result['frames']} frames @ {result['fps']:g} fps)")
    stages = result.get("stage_seconds", {})
    console.print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()),
                  highlight=False)
    motion = result.get("motion") or {}
    if motion:
        console.print(f"motion: region {motion.get('animation_region')}, "
                      f"{motion.get('driving_option')}, driving multiplier "
                      f"{motion.get('driving_multiplier', 1):g}, expression multiplier "
                      f"{motion.get('expression_multiplier', 1):g}", highlight=False)
        for note in motion.get("notes", []):
            console.print(f"[yellow]motion:[/] {note}", highlight=False)
    if result.get("missing_glyphs"):
        console.print("[yellow]no font has[/] " + ", ".join(result["missing_glyphs"])
                      + " (drawn as \N{REPLACEMENT CHARACTER})", highlight=False)


def cmd_render(args: argparse.Namespace) -> int:
    """Render in this process against running servers, or servers it starts itself."""
    from talkinghead.local_stack import LocalStack
    from talkinghead.orchestrator.jobspec import check_inputs
    from talkinghead.orchestrator.pipeline import render_video
    from talkinghead.orchestrator.progress import JobProgress
    from talkinghead.orchestrator.stage_clients import StageTargets
    from talkinghead.progress_view import StageProgressView
    from talkinghead.services.common.logs import configure_logging

    configure_logging("cli", fmt="plain", level="WARNING")
    spec = spec_from_args(args)
    job = check_inputs(spec)  # bad input refused before anything starts; checked only here
    stack = None
    if args.motion and args.lipsync and args.restore:
        targets = StageTargets(args.motion, args.lipsync, tuple(args.restore.split(",")))
    elif args.motion or args.lipsync or args.restore:
        raise CliError("name all of --motion, --lipsync and --restore, or none (to start them here)")
    else:
        stack = LocalStack(Path(args.out).resolve().parent / "logs", engine=args.engine)
        print(f"starting local {args.engine} servers (logs in {stack.log_dir})", file=sys.stderr)
        stack.start()
        targets = stack.targets
    try:
        with StageProgressView(title=spec.job_id) as view:
            result = render_video(job, targets, JobProgress(spec.job_id, view.update, 0.2))
    finally:
        if stack:
            stack.stop()
    print_result(result.to_dict())
    return 0


def follow(task_id: str, poll: float = 0.3, timeout: float | None = None) -> dict:
    """Show a job's progress until it ends; its result, or CliError with its reason."""
    from celery.result import AsyncResult

    from talkinghead.orchestrator.celery_app import app
    from talkinghead.progress_view import StageProgressView

    result = AsyncResult(task_id, app=app)
    started = time.monotonic()
    with StageProgressView(title=task_id) as view:
        while True:
            state = result.state
            if state == "PROGRESS":
                view.update(result.info)
            elif state == "SUCCESS":
                return result.result
            elif state == "REVOKED":
                raise CliError(f"job {task_id} was cancelled", EXIT_FAILED)
            elif state == "FAILURE":
                raise CliError(f"job {task_id} failed: {result.result}", EXIT_FAILED)
            if timeout and time.monotonic() - started > timeout:
                raise CliError(f"job {task_id} still {state} after {timeout:g}s", EXIT_FAILED)
            time.sleep(poll)


def cmd_submit(args: argparse.Namespace) -> int:
    from talkinghead.orchestrator.tasks import render

    spec = spec_from_args(args)
    render.apply_async(args=[spec.model_dump(mode="json")], task_id=spec.job_id)
    print(spec.job_id)
    if args.wait:
        print_result(follow(spec.job_id))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from celery.result import AsyncResult

    from talkinghead.orchestrator.celery_app import app

    result = AsyncResult(args.job, app=app)
    payload = {"job": args.job, "state": result.state}
    if result.state == "FAILURE":
        payload["error"] = str(result.result)
    elif result.info is not None:
        payload["info"] = result.info if isinstance(result.info, dict) else str(result.info)
    print(json.dumps(payload, indent=2, default=str))
    return EXIT_FAILED if result.state == "FAILURE" else 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from talkinghead.orchestrator.tasks import cancel

    cancel(args.job)
    print(f"cancel sent for {args.job}: a queued job will not start, a running one stops")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Three servers and a worker on the embedded broker; the bundled example, end to end."""
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    state_dir = out.parent / ".demo-state"
    # The demo always uses the embedded default, whatever the shell has configured.
    os.environ.pop("TALKINGHEAD_BROKER_URL", None)
    os.environ.pop("TALKINGHEAD_RESULT_BACKEND", None)
    os.environ["TALKINGHEAD_STATE_DIR"] = str(state_dir)
    from talkinghead.local_stack import LocalStack
    from talkinghead.services.common.logs import configure_logging

    configure_logging("cli", fmt="plain", level="WARNING")
    assets = resources.files(DEMO_ASSETS)
    args.face = args.face or str(assets / "face.jpg")
    args.audio = args.audio or str(assets / "speech.wav")
    args.card = args.card or str(assets / "card.json")
    args.template, args.logo, args.no_restore, args.job_id = "talking", None, False, None
    spec = spec_from_args(args)
    stack = LocalStack(out.parent / "logs", engine=args.engine, with_worker=True,
                       worker_env={"TALKINGHEAD_STATE_DIR": str(state_dir)})
    print(f"starting motion, lipsync, restore servers ({args.engine}) and a worker; "
          f"logs in {stack.log_dir}", file=sys.stderr)
    with stack:
        from talkinghead.orchestrator.tasks import render

        render.apply_async(args=[spec.model_dump(mode="json")], task_id=spec.job_id)
        print(f"submitted job {spec.job_id}", file=sys.stderr)
        result = follow(spec.job_id, timeout=args.timeout)
    print_result(result)
    return 0


def cmd_template_extract(args: argparse.Namespace) -> int:
    """Driving template from a video, with LivePortrait's motion extractor."""
    from talkinghead.services.common.errors import WeightsError
    from talkinghead.services.motion.template_extract import extract_template_file

    root = weights_dir(args.weights)
    if root is None:
        raise WeightsError("template extract needs the motion extractor: give --weights DIR")

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\rtemplate extract: frames {done}/{total}", end="", file=sys.stderr)
        elif done == total or done % 64 == 0:
            print(f"template extract: frames {done}/{total}", file=sys.stderr)

    smooth = args.smooth_variance if args.smooth else None
    if smooth is not None and not smooth > 0:
        raise CliError(f"--smooth-variance must be positive; got {smooth:g}")
    arrays = extract_template_file(Path(args.video), Path(args.out), root, args.device,
                                   max_frames=args.max_frames, on_progress=progress,
                                   smooth_variance=smooth)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"wrote {args.out}: {int(arrays['n_frames'])} frames at {float(arrays['fps']):g} fps")
    if "jitter_raw" in arrays:
        raw, smoothed = arrays["jitter_raw"], arrays["jitter_smoothed"]
        print(f"Kalman smoothing (observation variance {smooth:g}): frame-to-frame jitter "
              f"(RMS second difference) angles {raw[0]:.4g} -> {smoothed[0]:.4g} deg, exp "
              f"{raw[1]:.4g} -> {smoothed[1]:.4g}, t {raw[2]:.4g} -> {smoothed[2]:.4g}")
    return 0


def cmd_templates(args: argparse.Namespace) -> int:
    from talkinghead.services.motion.template import bundled_template_names, load_template

    for name in bundled_template_names():
        t = load_template(name)
        print(f"{name}\t{t.n_frames} frames\t{t.fps:g} fps\t{t.duration:.2f} s")
    return 0


def cmd_loop(args: argparse.Namespace) -> int:
    from talkinghead.loop_video import loop_video

    n = loop_video(Path(args.video), Path(args.out),
                   audio=Path(args.audio) if args.audio else None, seconds=args.seconds)
    print(f"wrote {n} frames to {args.out}")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from talkinghead import weights_cli

    return weights_cli.run(args, weights_dir(args.weights))


# ---------------------------------------------------------------- call one stage


def cmd_call(args: argparse.Namespace) -> int:
    from talkinghead import stage_calls

    return stage_calls.run(args)


# ---------------------------------------------------------------- parser


def add_job_inputs(p: argparse.ArgumentParser, required: bool = True) -> None:
    from talkinghead.motion_flags import add_motion_flags

    p.add_argument("--face", required=required, help="face photo (JPEG, PNG, …)")
    p.add_argument("--audio", required=required, help="speech (any format ffmpeg reads)")
    p.add_argument("--card", required=required, help="job card JSON: title, company, "
                   "location, skills[, ticker, channel_name]")
    p.add_argument("--template", default="talking", help="driving template name or .npz path")
    p.add_argument("--logo", help="logo image for the corner (default: the channel name)")
    p.add_argument("--no-restore", action="store_true", help="skip the restore stage")
    add_motion_flags(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="talkinghead", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n".join(__doc__.splitlines()[1:]),
    )
    sub = parser.add_subparsers(dest="command", required=True)

    from talkinghead.services.stages import STAGES, all_engine_names

    p = sub.add_parser("serve", help="run one warm model server")
    p.add_argument("stage", choices=list(STAGES))
    p.add_argument("--port", type=int, default=0, help="default " + ", ".join(
        f"{s.port} ({s.name})" for s in STAGES.values()))
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="Prometheus /metrics port (default port+1000; 0 disables)")
    p.add_argument("--engine", default="auto", choices=all_engine_names(), help="; ".join(
        f"{s.name}: {' | '.join(s.engine_names)}" for s in STAGES.values()))
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--weights", help="weights directory (official file layout)")
    p.add_argument("--max-streams", type=int, default=4,
                   help="concurrent streams; more get RESOURCE_EXHAUSTED")
    p.add_argument("--max-message-mb", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8,
                   help="frames per network call (Wav2Lip is fastest near 16 on CPU)")
    p.add_argument("--half", action="store_true",
                   help="fp16 networks on cuda/mps (not yet checked against the reference "
                   "tolerances on a GPU)")
    p.add_argument("--grace", type=float, default=30.0, help="drain seconds on SIGTERM")
    p.add_argument("--token-file", help="require this shared token (else TALKINGHEAD_TOKEN, "
                   "if set); calls without it get UNAUTHENTICATED, health checks stay open")
    p.add_argument("--tls-cert", help="serve TLS with this certificate (PEM)")
    p.add_argument("--tls-key", help="… and this private key (PEM)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for the networks (default: torch's choice); one per "
                   "replica when several replicas share a machine")
    for stage in STAGES.values():  # the flags only one stage uses
        for flag in stage.flags:
            p.add_argument(flag.flag, dest=flag.dest, default=flag.default,
                           help=f"({stage.name}) {flag.help}", **flag.kwargs)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="run a Celery worker that renders jobs")
    for stage in STAGES.values():
        servers = "servers, comma-separated" if stage.replicated else "server host:port"
        p.add_argument(f"--{stage.name}", help=f"{stage.name} {servers} (or {stage.target_env}; "
                       f"default {stage.default_target})")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
    p.add_argument("--loglevel", default="INFO")
    p.add_argument("--hostname", default="talkinghead@%h")
    p.add_argument("--queues", help="comma-separated queues to consume (default: celery)")
    p.add_argument("--state-db", help="file keeping this worker's revoked job ids across "
                   "restarts (so a cancelled queued job stays cancelled)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("render", help="render one video in this process")
    add_job_inputs(p)
    p.add_argument("--out", required=True, help="output .mp4")
    p.add_argument("--motion", help="motion server host:port")
    p.add_argument("--lipsync", help="lipsync server host:port")
    p.add_argument("--restore", help="restore servers, comma-separated")
    p.add_argument("--engine", default="lite", help="engine for servers started here")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("submit", help="submit a render job to the Celery broker")
    add_job_inputs(p)
    p.add_argument("--out", required=True, help="output .mp4 (on the worker's file system)")
    p.add_argument("--job-id", help="default: a random id")
    p.add_argument("--wait", action="store_true", help="follow progress until done")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="state, progress or result of a submitted job")
    p.add_argument("job")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("cancel", help="stop a submitted job (queued or running)")
    p.add_argument("job")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("demo", help="render the bundled example end to end")
    add_job_inputs(p, required=False)
    p.add_argument("--out", default="out/demo.mp4")
    p.add_argument("--engine", default="lite")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("loop", help="ping-pong loop a video to an audio's length (as a file)")
    p.add_argument("video")
    length = p.add_mutually_exclusive_group(required=True)
    length.add_argument("--audio", help="loop to this audio's length and mux it in")
    length.add_argument("--seconds", type=float, help="loop to this many seconds")
    p.add_argument("--out", "-o", required=True)
    p.set_defaults(func=cmd_loop)

    p = sub.add_parser("weights", help="the checkpoint files each neural engine expects")
    p.add_argument("action", choices=["list", "verify", "write-deterministic"],
                   help="list: expected files and which are present; verify: load each "
                   "into its network; write-deterministic: write the reference packs' "
                   "deterministic weights in the official layout (benchmarks, tests)")
    p.add_argument("--weights", help="weights directory (default TALKINGHEAD_WEIGHTS_DIR)")
    p.add_argument("--salt", default="talkinghead-a", help="(write-deterministic) weight salt")
    p.add_argument("--engines", default="liveportrait,wav2lip,gfpgan",
                   help="(write-deterministic) whose files, comma-separated: liveportrait, "
                        "wav2lip, gfpgan, musetalk (3.4 GB, needs talkinghead[musetalk])")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("template", help="driving templates: extract one from a video")
    tsub = p.add_subparsers(dest="template_command", required=True)
    e = tsub.add_parser("extract", help="VIDEO → NAME.npz with LivePortrait's motion extractor")
    e.add_argument("video")
    e.add_argument("--out", "-o", required=True, help="output .npz")
    e.add_argument("--weights", help="weights directory (default TALKINGHEAD_WEIGHTS_DIR)")
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    e.add_argument("--max-frames", type=int, help="only the first N frames (previews, tests)")
    e.add_argument("--smooth", action="store_true",
                   help="Kalman-smooth the extracted motion (upstream's smoother for source "
                        "videos, offered here for templates; prints the jitter before/after)")
    e.add_argument("--smooth-variance", type=float, default=3e-7,
                   help="the smoother's observation variance: larger is smoother "
                        "(default %(default)g, upstream's)")
    e.set_defaults(func=cmd_template_extract)

    p = sub.add_parser("templates", help="list the bundled driving templates")
    p.set_defaults(func=cmd_templates)

    from talkinghead.stage_calls import add_call_parser

    add_call_parser(sub, cmd_call)
    return parser


def main(argv: list[str] | None = None) -> int:
    from talkinghead.malloc_tuning import limit_malloc_arenas

    limit_malloc_arenas()
    args = build_parser().parse_args(argv)
    from talkinghead.orchestrator.stage_clients import StageFailed, StageUnavailable
    from talkinghead.services.common.errors import InputError, WeightsError

    try:
        return args.func(args) or 0
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (StageFailed, StageUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT if getattr(exc, "code", None) and exc.code.name in (
            "INVALID_ARGUMENT", "NOT_FOUND") else EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
