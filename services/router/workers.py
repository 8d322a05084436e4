"""Workers the router can send to: a gRPC client each, health and load polling, circuit breakers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from enum import Enum

import grpc
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.router import metrics
from services.router.breaker import CircuitBreaker, CircuitState

log = logging.getLogger(__name__)

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


class WorkerState(Enum):
    READY = "ready"
    NOT_READY = "not_ready"  # failing health checks, still probed
    FAILED = "failed"  # failed many checks in a row, probed less often


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """The worker's own view of its load, from GetLoads."""

    num_running: int = 0
    num_waiting: int = 0
    token_usage: float = 0.0
    cache_hit_rate: float = 0.0
    accept_length: float = 0.0
    max_running: int = 0


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    interval_s: float = 2.0
    timeout_s: float = 1.0
    not_ready_after: int = 2  # consecutive failed checks
    failed_after: int = 10


@dataclass(eq=False, slots=True)
class Worker:
    """One worker endpoint with the router's view of its state."""

    url: str
    channel: grpc.aio.Channel
    stub: pb_grpc.SglangSchedulerStub
    breaker: CircuitBreaker
    state: WorkerState = WorkerState.NOT_READY
    in_flight: int = 0  # samples the router has in flight here
    load: WorkerLoad = field(default_factory=WorkerLoad)
    failed_checks: int = 0
    model_info: pb.GetModelInfoResponse | None = None

    @classmethod
    def connect(cls, url: str, breaker: CircuitBreaker) -> Worker:
        channel = grpc.aio.insecure_channel(url, options=CHANNEL_OPTIONS)
        return cls(url, channel, pb_grpc.SglangSchedulerStub(channel), breaker)

    @property
    def is_routable(self) -> bool:
        return self.state is WorkerState.READY and self.breaker.allows()

    def add_in_flight(self, delta: int) -> None:
        self.in_flight += delta
        metrics.WORKER_IN_FLIGHT.labels(self.url).set(self.in_flight)

    def record_failure(self, stage: str) -> None:
        """A call failed at the transport level: count it against the breaker and stop routing here at once."""
        self.breaker.record_failure()
        metrics.WORKER_FAILURES.labels(self.url, stage).inc()
        metrics.CIRCUIT_STATE.labels(self.url).set(int(self.breaker.state))
        if stage == "connect":
            self._set_state(WorkerState.NOT_READY)

    def record_success(self) -> None:
        self.breaker.record_success()
        metrics.CIRCUIT_STATE.labels(self.url).set(int(self.breaker.state))

    def _set_state(self, state: WorkerState) -> None:
        if state is not self.state:
            log.info("worker state", extra={"worker": self.url, "from": self.state.value, "to": state.value})
            self.state = state
        metrics.WORKER_STATE.labels(self.url).set(1 if state is WorkerState.READY else 0)

    async def probe(self, policy: HealthPolicy) -> None:
        """One health check plus a load read; updates state."""
        try:
            health = await self.stub.HealthCheck(pb.HealthCheckRequest(), timeout=policy.timeout_s)
            if not health.healthy:
                raise RuntimeError(health.message or "unhealthy")
            loads = await self.stub.GetLoads(pb.GetLoadsRequest(), timeout=policy.timeout_s)
            if self.model_info is None:
                self.model_info = await self.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=policy.timeout_s)
        except (TimeoutError, grpc.aio.AioRpcError, RuntimeError) as e:
            self.failed_checks += 1
            if self.failed_checks >= policy.failed_after:
                self._set_state(WorkerState.FAILED)
            elif self.failed_checks >= policy.not_ready_after or self.state is not WorkerState.READY:
                self._set_state(WorkerState.NOT_READY)
            log.debug("health check failed", extra={"worker": self.url, "error": str(e)[:200]})
            return
        self.failed_checks = 0
        self.load = _parse_load(loads)
        if self.breaker.state is not CircuitState.CLOSED:
            self.record_success()  # a healthy probe lets trial traffic through (open -> half-open)
        self._set_state(WorkerState.READY)

    async def close(self) -> None:
        await self.channel.close()
        for gauge in (metrics.WORKER_IN_FLIGHT, metrics.WORKER_STATE, metrics.CIRCUIT_STATE):
            with contextlib.suppress(KeyError):
                gauge.remove(self.url)


def _parse_load(resp: pb.GetLoadsResponse) -> WorkerLoad:
    if not resp.loads:
        return WorkerLoad()
    first = resp.loads[0]
    spec = first.speculative if first.HasField("speculative") else None
    return WorkerLoad(
        num_running=sum(x.num_running_reqs for x in resp.loads),
        num_waiting=sum(x.num_waiting_reqs for x in resp.loads),
        token_usage=max(x.token_usage for x in resp.loads),
        cache_hit_rate=first.cache_hit_rate,
        accept_length=spec.accept_length if spec else 0.0,
        max_running=sum(x.max_running_requests for x in resp.loads),
    )


class WorkerPool:
    """The set of workers, kept current by discovery, probed by one health loop."""

    def __init__(self, health: HealthPolicy, breaker: CircuitBreaker) -> None:
        self._health = health
        self._breaker_template = breaker
        self.workers: dict[str, Worker] = {}
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self.on_removed: list = []  # callbacks(url) — e.g. the cache-aware policy forgets the worker

    async def add(self, url: str) -> Worker:
        if url in self.workers:
            return self.workers[url]
        t = self._breaker_template
        worker = Worker.connect(url, CircuitBreaker(t.failure_threshold, t.success_threshold, t.open_s))
        self.workers[url] = worker
        log.info("worker added", extra={"worker": url})
        await worker.probe(self._health)
        self._changed.set()
        return worker

    async def remove(self, url: str) -> None:
        worker = self.workers.pop(url, None)
        if worker is None:
            return
        log.info("worker removed", extra={"worker": url})
        for callback in self.on_removed:
            callback(url)
        await worker.close()

    def routable(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.is_routable]

    def any_model_info(self) -> pb.GetModelInfoResponse | None:
        return next((w.model_info for w in self.workers.values() if w.model_info is not None), None)

    async def wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.routable():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            workers = list(self.workers.values())
            due = [w for w in workers if w.state is not WorkerState.FAILED or int(started) % 5 == 0]
            await asyncio.gather(*(w.probe(self._health) for w in due), return_exceptions=True)
            await asyncio.sleep(max(0.0, self._health.interval_s - (time.monotonic() - started)))

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for url in list(self.workers):
            await self.remove(url)
