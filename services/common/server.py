"""One `run()` for every gRPC service: health, reflection, metrics, limits, interceptors and a graceful drain."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from services.common.config import ServerSettings
from services.common.interceptors import DrainInterceptor, MetricsInterceptor
from services.common.metrics import MetricsServer, rpc_metrics
from services.common.tracing import server_interceptors, setup_tracing

log = logging.getLogger(__name__)

REFUSE_WINDOW_S = 0.25  # a drain refuses new calls this long before grpc's own shutdown starts

Hook = Callable[[], Awaitable[None]]


class StartupError(RuntimeError):
    """A service cannot start (a dependency unreachable, bad configuration); the message says what to fix."""


@dataclass(slots=True)
class Service:
    """What a service hands to the runtime: how to register its servicers and the full names they serve."""

    register: Callable[[grpc.aio.Server], None]
    names: Sequence[str]  # e.g. ["mimo.v1.Tokenizer"]
    on_start: Sequence[Hook] = ()  # after the port is bound, before SERVING
    on_drain: Sequence[Hook] = ()  # after NOT_SERVING, before in-flight calls are waited for
    on_stop: Sequence[Hook] = ()  # after the server stopped
    interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
    # Readiness the service reports itself: the runtime hands it a setter and reports the service names and ""
    # NOT_SERVING until the service calls it with True (the router: until a worker is routable). Without it the
    # service is ready once started. LIVENESS is SERVING from start to drain either way.
    readiness: Callable[[Callable[[bool], None]], None] | None = None


LIVENESS = "liveness"


@dataclass(slots=True)
class RunningServer:
    """A started server: its bound port and the means to drain it."""

    server: grpc.aio.Server
    health: HealthServicer
    port: int
    settings: ServerSettings
    service: Service
    gate: DrainInterceptor
    metrics: MetricsServer | None = None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def drain(self) -> None:
        """Health NOT_SERVING, refuse new calls, let in-flight calls finish within the grace period."""
        if self.stopped.is_set():
            return
        log.info("draining", extra={"grace_s": self.settings.grace_s})
        self.gate.is_draining = True
        await self.health.enter_graceful_shutdown()
        # calls already on the wire land in the gate (UNAVAILABLE, retried elsewhere) rather than racing grpc's
        # shutdown, which cancels them
        await asyncio.sleep(min(REFUSE_WINDOW_S, self.settings.grace_s))
        for hook in self.service.on_drain:
            await hook()
        await self.server.stop(self.settings.grace_s)
        for hook in self.service.on_stop:
            await hook()
        if self.metrics:
            self.metrics.stop()
        self.stopped.set()
        log.info("stopped")


def _credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    if not settings.has_tls:
        return None
    with open(settings.tls_key or "", "rb") as key, open(settings.tls_cert or "", "rb") as cert:
        return grpc.ssl_server_credentials([(key.read(), cert.read())])


async def start(settings: ServerSettings, service: Service) -> RunningServer:
    """Bind, register health + reflection + the service, start metrics, and report SERVING."""
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    gate = DrainInterceptor()
    interceptors = [
        gate,
        MetricsInterceptor(rpc_metrics(settings.service)),
        *server_interceptors(),
        *service.interceptors,
    ]
    server = grpc.aio.server(options=options, interceptors=interceptors)
    health = HealthServicer()
    # grpc_health starts the overall service ("") at SERVING; nothing is ready until on_start has run
    await health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    service.register(server)
    names = [*service.names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    creds = _credentials(settings)
    try:
        port = server.add_secure_port(settings.listen, creds) if creds else server.add_insecure_port(settings.listen)
    except RuntimeError:
        port = 0
    if port == 0:
        raise StartupError(f"--listen: cannot bind {settings.listen} (in use, or not an address of this host)")
    try:
        metrics = (
            MetricsServer(settings.metrics_host, settings.metrics_port) if settings.metrics_port is not None else None
        )
    except OSError as e:
        raise StartupError(f"--metrics-port: cannot serve metrics on {settings.metrics_port}: {e.strerror}") from e
    await server.start()
    try:
        for hook in service.on_start:
            await hook()
    except BaseException:
        await server.stop(0)
        if metrics:
            metrics.stop()
        raise
    await health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
    names_ready = [*service.names, ""]
    if service.readiness is None:
        for name in names_ready:
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    else:
        _report_readiness(health, names_ready, service.readiness)
    host = settings.listen.rpartition(":")[0]
    log.info("serving", extra={"service": settings.service, "listen": f"{host}:{port}", "tls": settings.has_tls})
    return RunningServer(server, health, port, settings, service, gate, metrics)


def _report_readiness(
    health: HealthServicer, names: Sequence[str], readiness: Callable[[Callable[[bool], None]], None]
) -> None:
    pending: set[asyncio.Task[None]] = set()

    async def report(ready: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in names:
            await health.set(name, status)
        log.info("ready" if ready else "not ready")

    def set_ready(ready: bool) -> None:
        task = asyncio.get_running_loop().create_task(report(ready))
        pending.add(task)
        task.add_done_callback(pending.discard)

    set_ready(False)
    readiness(set_ready)


async def serve_until_signal(settings: ServerSettings, service: Service) -> int:
    """Start the server, wait for SIGTERM or SIGINT, drain, and return the exit code (0)."""
    running = await start(settings, service)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(running.server.wait_for_termination())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    await running.drain()
    waiter.cancel()
    stopper.cancel()
    return 0


def run(settings: ServerSettings, build: Callable[[], Awaitable[Service]]) -> int:
    """Entry point of every server: build the service inside the event loop, serve, drain on SIGTERM, exit 0."""
    from services.common.logs import setup_logging

    setup_logging(settings.log_level)
    setup_tracing(settings.service)

    async def main() -> int:
        return await serve_until_signal(settings, await build())

    try:
        return asyncio.run(main())
    except StartupError as e:
        print(f"mimo-serve {settings.service}: {e}", file=sys.stderr)
        return 2
