"""Bootstrap shared by the three model servers.

Every server here behaves the same way, whatever its model:
  * it binds (127.0.0.1 unless told otherwise) and answers health checks at once, but
    says NOT_SERVING, and refuses work with UNAVAILABLE, until its engine is loaded and
    warmed up: clients wait for SERVING instead of failing;
  * standard health service (Check, Watch and List) and server reflection (so
    ``grpcurl list`` works);
  * Prometheus metrics on a side port;
  * explicit message-size limits and a limit on concurrent streams (RESOURCE_EXHAUSTED
    beyond it, so an overloaded replica says so and the caller tries another);
  * deadlines and cancellations stop the work between chunks;
  * SIGTERM drains: NOT_SERVING, no new streams, in-flight streams get a grace period.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from talkinghead.services.common import metrics
from talkinghead.services.common.engine_contract import Engine, describe
from talkinghead.services.common.engines import choose_engine
from talkinghead.services.common.errors import InputError, NotFoundError, WeightsError
from talkinghead.services.common.logs import JOB_METADATA_KEY, job_context
from talkinghead.services.common.security import TokenInterceptor, server_credentials
from talkinghead.v1 import frames_pb2

log = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 64 * MiB
DRAIN_NOTICE_SECONDS = 1.0


@dataclass
class ServerSettings:
    """What an operator sets on ``talkinghead serve STAGE``."""

    stage: str
    port: int
    host: str = "127.0.0.1"
    metrics_port: int = 0  # 0: no metrics endpoint
    engine: str = "auto"
    device: str = "auto"
    weights_dir: Path | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_streams: int = 4
    grace_seconds: float = 30.0
    batch_size: int = 8
    half: bool = False  # fp16 networks on cuda/mps
    # The stage's own flags (services/stages.py, Stage.flags), e.g. restore's paste_mask,
    # bf16 and compile, motion's templates_dir; those not given take their defaults.
    options: dict[str, Any] = field(default_factory=dict)
    token: str | None = None  # shared secret; calls without it get UNAUTHENTICATED
    tls_cert: str | None = None
    tls_key: str | None = None

    # (field, flag, low, high): what `talkinghead serve` accepts; out of range the server does
    # not start (InputError naming the flag: "error: ..." and exit code 2).
    LIMITS = (
        ("port", "--port", 0, 65535),
        ("metrics_port", "--metrics-port (default: port + 1000)", 0, 65535),
        ("max_streams", "--max-streams", 1, 1024),
        ("batch_size", "--batch-size", 1, 1024),
        ("max_message_bytes", "--max-message-mb", 1 * MiB, 2047 * MiB),
        ("grace_seconds", "--grace", 0.0, 86400.0),
    )

    def __post_init__(self) -> None:
        from talkinghead.services.stages import stage

        defaults = stage(self.stage).option_defaults()
        unknown = sorted(set(self.options) - set(defaults))
        if unknown:
            raise ValueError(f"{self.stage} server settings have no option(s) {unknown} "
                             f"(known: {sorted(defaults)})")
        self.options = {**defaults, **self.options}
        for name, flag, low, high in self.LIMITS:
            value = getattr(self, name)
            if not low <= value <= high:  # NaN too
                scale = MiB if name == "max_message_bytes" else 1
                raise InputError(f"{flag} must be within {low / scale:g}..{high / scale:g}; "
                                 f"got {value / scale:g}")

    def grpc_options(self) -> list[tuple[str, Any]]:
        return [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]


# Trailing metadata on a RESOURCE_EXHAUSTED that means "full now, call again later" (the
# stream limit). gRPC itself answers RESOURCE_EXHAUSTED for a message over the size limit,
# which no wait will cure: callers tell the two apart by this key.
BUSY_METADATA_KEY = "talkinghead-busy"


E = TypeVar("E", bound=Engine)


class StageGate(Generic[E]):
    """Admission control for one server: loaded yet? draining? room for another stream?

    The gate holds the engine: it opens (``open``) once the engine is loaded and warm, and
    admits calls only then, so a handler inside ``admit`` always has ``gate.engine``."""

    def __init__(self, stage: str, max_streams: int):
        self.stage = stage
        self.max_streams = max_streams
        self.ready = threading.Event()
        self.draining = False
        self.failure: str | None = None  # why the engine could not load (weights)
        self._engine: E | None = None
        self._slots = threading.BoundedSemaphore(max_streams)

    def open(self, engine: E) -> None:
        """The engine is loaded and warm: admit calls."""
        self._engine = engine
        self.ready.set()

    def fail(self, reason: str) -> None:
        """The engine cannot load: refuse calls with FAILED_PRECONDITION and ``reason``."""
        self.failure = reason

    def drain(self) -> None:
        """Shutting down: refuse new calls with UNAVAILABLE."""
        self.draining = True

    @property
    def engine(self) -> E:
        if self._engine is None:
            raise RuntimeError(f"{self.stage} engine used before it was loaded")
        return self._engine

    @contextlib.contextmanager
    def admit(self, context: grpc.ServicerContext) -> Iterator[None]:
        if self.draining:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.stage} server is shutting down")
        if self.failure is not None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, self.failure)
        if not self.ready.is_set():
            context.abort(
                grpc.StatusCode.UNAVAILABLE, f"{self.stage} server is still loading its model"
            )
        if not self._slots.acquire(blocking=False):
            context.set_trailing_metadata(((BUSY_METADATA_KEY, "stream-limit"),))
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.stage} server is busy: {self.max_streams} streams in progress "
                f"(its limit); retry later or use another replica",
            )
        metrics.STREAMS_IN_FLIGHT.labels(self.stage).inc()
        try:
            yield
        finally:
            metrics.STREAMS_IN_FLIGHT.labels(self.stage).dec()
            self._slots.release()


def job_id_of(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == JOB_METADATA_KEY:
            return str(value)
    return "-"


def _status_for(exc: Exception) -> grpc.StatusCode:
    if isinstance(exc, NotFoundError):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, InputError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, WeightsError):
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INTERNAL


DEADLINE_SLACK_SECONDS = 0.05  # the core's clock and time.time() may differ by this much


def ended_early_code(context: grpc.ServicerContext) -> grpc.StatusCode:
    """Why a call that is no longer active ended without a status of ours: its deadline
    passed (DEADLINE_EXCEEDED) or the client cancelled it (CANCELLED)."""
    if context.time_remaining() <= DEADLINE_SLACK_SECONDS:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def streaming_rpc(method: str) -> Callable:
    """Decorate a response-streaming handler of a ``StageServicer`` (its ``.gate``, ``.stage``).

    Admits the call through the gate, tags logs with the caller's job id, maps engine
    errors to status codes, stops when the client goes away, and records metrics: a call
    the client cancelled counts as CANCELLED, one whose deadline passed as
    DEADLINE_EXCEEDED, whether gRPC noticed it between chunks (``is_active``), while
    reading the client's stream (the request iterator raises) or while sending (gRPC stops
    iterating and closes this generator: GeneratorExit).
    """

    def decorate(handler: Callable) -> Callable:
        @functools.wraps(handler)
        def wrapper(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            with job_context(job_id_of(context), self.stage):
                try:
                    with self.gate.admit(context):
                        log.info("%s started", method)
                        for response in handler(self, request, context):
                            if not context.is_active():
                                code = ended_early_code(context)
                                log.warning("%s stopped: %s", method, _ended_text(code))
                                return
                            metrics.FRAMES.labels(self.stage).inc(len(response.frames))
                            yield response
                        remaining = context.time_remaining()
                        if not _settled_active(context) or (
                            remaining is not None and remaining <= DEADLINE_SLACK_SECONDS
                        ):
                            # The request iterator simply ends when the call is over (a cancel
                            # or deadline while we waited for the client's frames): not an OK.
                            code = ended_early_code(context)
                            log.warning("%s stopped: %s", method, _ended_text(code))
                            return
                        log.info("%s finished in %.2fs", method, time.perf_counter() - started)
                except GeneratorExit:
                    # gRPC stopped taking responses: the client went away or the deadline
                    # passed while a response was being sent.
                    if context.code() in (None, grpc.StatusCode.OK):
                        code = ended_early_code(context)
                        log.warning("%s stopped: %s", method, _ended_text(code))
                    raise
                except Exception as exc:
                    if context.code() not in (None, grpc.StatusCode.OK):
                        code = context.code()  # already aborted (gate, or handler on purpose)
                        raise
                    if not context.is_active():
                        # e.g. the request iterator raised because the client cancelled
                        code = ended_early_code(context)
                        log.warning("%s stopped: %s (%s)", method, _ended_text(code),
                                    type(exc).__name__)
                        return
                    code = _status_for(exc)
                    if code == grpc.StatusCode.INTERNAL:
                        log.exception("%s failed", method)
                    else:
                        log.warning("%s refused: %s", method, exc)
                    context.abort(code, str(exc))
                finally:
                    metrics.REQUESTS.labels(self.stage, method, code.name).inc()
                    metrics.REQUEST_SECONDS.labels(self.stage, method).observe(
                        time.perf_counter() - started
                    )

        return wrapper

    return decorate


# gRPC ends a server's request iterator (StopIteration) as soon as a cancelled call's last
# receive completes, a moment before the call reads as inactive: a handler that ends then
# looks finished. So before counting a finished call OK, give that moment this long.
SETTLE_SECONDS = 0.01


def _settled_active(context: grpc.ServicerContext) -> bool:
    deadline = time.monotonic() + SETTLE_SECONDS
    while context.is_active():
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.002)
    return False


def _ended_text(code: grpc.StatusCode) -> str:
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "deadline passed"
    return "client cancelled"


class HealthServicer(health.HealthServicer):
    """grpcio-health-checking's servicer plus ``List``: the package's proto has the RPC (so
    reflection lists it) but its servicer leaves it UNIMPLEMENTED. List answers every service
    this server reports on (the server as a whole, ``""``, included) with its status."""

    def __init__(self) -> None:
        super().__init__(experimental_non_blocking=True)
        self._statuses_lock = threading.Lock()
        # the package's servicer starts with the server as a whole SERVING
        self._statuses: dict[str, int] = {"": health_pb2.HealthCheckResponse.SERVING}
        self._final = False  # after enter_graceful_shutdown, as in the package: no changes

    def set(self, service: str, status: int) -> None:
        with self._statuses_lock:
            if not self._final:
                self._statuses[service] = status
        super().set(service, status)

    def enter_graceful_shutdown(self) -> None:
        with self._statuses_lock:
            if not self._final:
                self._statuses = dict.fromkeys(
                    self._statuses, health_pb2.HealthCheckResponse.NOT_SERVING)
            self._final = True
        super().enter_graceful_shutdown()

    def List(self, request: health_pb2.HealthListRequest, context) -> health_pb2.HealthListResponse:
        with self._statuses_lock:
            statuses = dict(self._statuses)
        return health_pb2.HealthListResponse(statuses={
            name: health_pb2.HealthCheckResponse(status=status)
            for name, status in statuses.items()
        })


class StageServicer(Generic[E]):
    """What every stage's gRPC servicer shares: built from the server's settings, it holds the
    stage's gate (which holds the engine once loaded) and the server's message limit, and
    says which gRPC service it is. A stage's servicer derives from this and from its
    generated ``*Servicer`` class, and sets ``stage``, ``service`` and ``add_to_server``."""

    stage: ClassVar[str]
    service: ClassVar[Any]  # the service's descriptor (<stage>_pb2.DESCRIPTOR.services_by_name)
    add_to_server: ClassVar[Callable[[Any, grpc.Server], None]]

    def __init__(self, settings: ServerSettings):
        if settings.stage != self.stage:
            raise ValueError(f"{type(self).__name__} serves {self.stage}, not {settings.stage}")
        self.gate: StageGate[E] = StageGate(settings.stage, settings.max_streams)
        self.max_message_bytes = settings.max_message_bytes

    @property
    def engine(self) -> E:
        """The loaded engine (handlers run only once the gate has opened)."""
        return self.gate.engine

    def engine_info(self) -> frames_pb2.EngineInfo:
        """The engine as the first response of every call names it."""
        return frames_pb2.EngineInfo(**describe(self.engine))

    def engine_info_or_abort(self, context: grpc.ServicerContext) -> frames_pb2.EngineInfo:
        """For unary info calls, which do not pass the gate: FAILED_PRECONDITION with the
        reason if the engine could not load, UNAVAILABLE while it is loading."""
        if self.gate.failure is not None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, self.gate.failure)
        if not self.gate.ready.is_set():
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          f"{self.stage} server is still loading its model")
        return self.engine_info()


class ModelServer:
    """One warm model behind gRPC: a stage's servicer plus the health, reflection and metrics
    every server has. ``load_engine`` defaults to the engine the settings name, chosen
    through the stage registry (``choose_engine``)."""

    def __init__(
        self,
        settings: ServerSettings,
        servicer: StageServicer,
        load_engine: Callable[[], Engine] | None = None,
    ):
        self.settings = settings
        self.servicer = servicer
        self.gate = servicer.gate
        self.health = HealthServicer()
        self.service_names = [servicer.service.full_name]
        self._load_engine = load_engine or (lambda: choose_engine(settings))
        self._stop = threading.Event()
        interceptors = [TokenInterceptor(settings.token)] if settings.token else []
        self.server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=settings.max_streams + 8,
                thread_name_prefix=f"{settings.stage}-rpc",
            ),
            options=settings.grpc_options(),
            interceptors=interceptors,
        )
        self.bound_port = 0

    def start(self) -> int:
        s = self.settings
        type(self.servicer).add_to_server(self.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{s.host}:{s.port}"
        if s.tls_cert and s.tls_key:
            self.bound_port = self.server.add_secure_port(
                address, server_credentials(s.tls_cert, s.tls_key))
        else:
            self.bound_port = self.server.add_insecure_port(address)
        if self.bound_port == 0:
            raise OSError(f"cannot bind {s.host}:{s.port} (port in use?)")
        self.server.start()
        metrics.serve_metrics(s.host, s.metrics_port)
        log.info(
            "listening on %s:%d (%s, %s; metrics port %s), loading engine %r on device %r",
            s.host, self.bound_port, "TLS" if s.tls_cert else "plaintext",
            "token required" if s.token else "no token", s.metrics_port or "off",
            s.engine, s.device,
        )
        return self.bound_port

    def load(self) -> None:
        """Load and warm the engine, then open the gate and report SERVING."""
        started = time.perf_counter()
        engine = self._load_engine()
        engine.warmup()
        self._clock_networks(engine)
        self.gate.open(engine)
        metrics.READY.labels(self.settings.stage, engine.name).set(1)
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "engine %s on %s ready in %.2fs: SERVING",
            engine.name, engine.device, time.perf_counter() - started,
            extra={"engine": engine.name, "device": engine.device},
        )

    def _clock_networks(self, engine: Engine) -> None:
        """Count network seconds (metrics.NETWORK_SECONDS). Free on a CPU; on a GPU it needs
        a synchronise per forward pass, so there only when asked for."""
        from talkinghead.services.common.network_time import NetworkClock, networks_of

        device = engine.device
        synchronize = os.environ.get("TALKINGHEAD_NETWORK_TIMING", "") == "sync"
        if device != "cpu" and not synchronize:
            return
        counter = metrics.NETWORK_SECONDS.labels(self.settings.stage)
        self._network_clock = NetworkClock(networks_of(engine), counter.inc, synchronize)

    def drain(self) -> None:
        """Stop taking work, let streams in flight finish within the grace period."""
        log.info("draining (grace %.0fs)", self.settings.grace_seconds)
        self.gate.drain()
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        # Let health checkers see NOT_SERVING before the listener closes.
        time.sleep(DRAIN_NOTICE_SECONDS)
        self.server.stop(self.settings.grace_seconds).wait()
        log.info("stopped")

    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    def run_until_signalled(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.start()
        try:
            self.load()
        except WeightsError as exc:
            # Stay up, NOT_SERVING, answering FAILED_PRECONDITION with the reason: the
            # operator sees it in health checks, logs and every caller's error.
            self.gate.fail(f"{self.settings.stage} engine unavailable: {exc}")
            log.error("%s", self.gate.failure)
        except Exception:
            log.exception("engine failed to load; shutting down")
            self.server.stop(0)
            raise
        while not self._stop.wait(timeout=1.0):
            pass
        self.drain()

    def _set_health(self, status: int) -> None:
        for name in ("", *self.service_names):
            self.health.set(name, status)
