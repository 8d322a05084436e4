"""Workers the router can send to: the router's view of each (state, load, in-flight), health and load polling,
circuit breakers. The wire lives in `worker_client.py`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from services.router import metrics
from services.router.breaker import CircuitBreaker, CircuitState
from services.router.domain import WorkerCallFailed, WorkerEvent, WorkerLoad, WorkerModelInfo, WorkerRequest

log = logging.getLogger(__name__)


class WorkerConnection(Protocol):
    """A client of one worker (`worker_client.WorkerClient`, or a test's own); failures raise WorkerCallFailed."""

    def generate(self, request: WorkerRequest, timeout_s: float | None) -> AsyncIterator[WorkerEvent]: ...
    async def abort(self, request_id: str, reason: str) -> None: ...
    async def health(self, timeout_s: float) -> tuple[bool, str]: ...
    async def load(self, timeout_s: float) -> WorkerLoad: ...
    async def model_info(self, timeout_s: float) -> WorkerModelInfo: ...
    # mimo.v1.WorkerControl, for the fleet's weight updates (fleet.py)
    async def pause(self, abort: bool, timeout_s: float) -> int: ...
    async def resume(self) -> None: ...
    async def update_weights(self, model_path: str, weight_version: str, timeout_s: float) -> float: ...
    async def weight_version(self, timeout_s: float) -> str: ...
    async def close(self) -> None: ...


class WorkerState(Enum):
    READY = "ready"
    NOT_READY = "not_ready"  # failing health checks, still probed
    FAILED = "failed"  # failed many checks in a row, probed less often


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
    client: WorkerConnection
    breaker: CircuitBreaker
    state: WorkerState = WorkerState.NOT_READY
    in_flight: int = 0  # samples the router has in flight here
    load: WorkerLoad = field(default_factory=WorkerLoad)
    failed_checks: int = 0
    model_info: WorkerModelInfo | None = None
    weight_version: str = ""  # as the worker last reported it (GetModelInfo on every probe, or the fleet's check)
    hold: str | None = None  # why the fleet keeps it out of routing (updating, behind the fleet's version)
    on_change: Callable[[], None] | None = None  # the pool re-evaluates readiness

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    @property
    def is_routable(self) -> bool:
        return self.state is WorkerState.READY and self.breaker.allows() and self.hold is None

    def set_weight_version(self, version: str) -> None:
        if version == self.weight_version:
            return
        with contextlib.suppress(KeyError):
            metrics.WORKER_WEIGHT_VERSION.remove(self.url, self.weight_version)
        self.weight_version = version
        metrics.WORKER_WEIGHT_VERSION.labels(self.url, version).set(1)
        self._changed()

    def set_hold(self, reason: str | None) -> None:
        if reason != self.hold:
            log.info("worker hold", extra={"worker": self.url, "hold": reason or "released"})
            self.hold = reason
            self._changed()

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
        self._changed()

    def record_success(self) -> None:
        self.breaker.record_success()
        metrics.CIRCUIT_STATE.labels(self.url).set(int(self.breaker.state))
        self._changed()

    def _set_state(self, state: WorkerState) -> None:
        if state is not self.state:
            log.info("worker state", extra={"worker": self.url, "from": self.state.value, "to": state.value})
            self.state = state
            self._changed()
        metrics.WORKER_STATE.labels(self.url).set(1 if state is WorkerState.READY else 0)

    async def probe(self, policy: HealthPolicy) -> None:
        """One health check plus a load read; updates state."""
        try:
            healthy, message = await self.client.health(policy.timeout_s)
            if not healthy:
                raise RuntimeError(message or "unhealthy")
            load = await self.client.load(policy.timeout_s)
            self.model_info = await self.client.model_info(policy.timeout_s)  # its weight version may have changed
        except (TimeoutError, WorkerCallFailed, RuntimeError) as e:
            self.failed_checks += 1
            if self.failed_checks >= policy.failed_after:
                self._set_state(WorkerState.FAILED)
            elif self.failed_checks >= policy.not_ready_after or self.state is not WorkerState.READY:
                self._set_state(WorkerState.NOT_READY)
            log.debug("health check failed", extra={"worker": self.url, "error": str(e)[:200]})
            return
        self.failed_checks = 0
        self.load = load
        if self.breaker.state is not CircuitState.CLOSED:
            self.record_success()  # a healthy probe lets trial traffic through (open -> half-open)
        self.set_weight_version(self.model_info.weight_version)
        self._set_state(WorkerState.READY)

    async def close(self) -> None:
        await self.client.close()
        for gauge in (metrics.WORKER_IN_FLIGHT, metrics.WORKER_STATE, metrics.CIRCUIT_STATE):
            with contextlib.suppress(KeyError):
                gauge.remove(self.url)
        with contextlib.suppress(KeyError):
            metrics.WORKER_WEIGHT_VERSION.remove(self.url, self.weight_version)


class WorkerPool:
    """The set of workers, kept current by discovery, probed by one health loop. "Routable" (ready, breaker not
    open, not held by the fleet, at the fleet's weight version) is what requests wait for; readiness also counts
    a fleet update in progress as ready, so requests queue here during an update instead of being turned away."""

    def __init__(
        self, health: HealthPolicy, breaker: CircuitBreaker, connect: Callable[[str], WorkerConnection]
    ) -> None:
        self._health = health
        self._connect = connect
        self._breaker_template = breaker
        self.workers: dict[str, Worker] = {}
        self._task: asyncio.Task[None] | None = None
        self._has_routable = asyncio.Event()
        self.on_removed: list[Callable[[str], None]] = []  # callbacks(url), e.g. the cache-aware policy forgets
        self.on_routable: list[Callable[[bool], None]] = []  # callbacks(ready), e.g. health readiness
        self.on_probed: list[Callable[[Worker], None]] = []  # after each successful probe (the fleet's catch-up)
        self.on_added: list[Callable[[str], None]] = []  # callbacks(url), e.g. a KV-event subscription
        self.target_version: str | None = None  # the fleet's version: workers elsewhere get no traffic
        self.updating = False  # a fleet update is running (readiness holds)
        self._ready = False

    async def add(self, url: str) -> Worker:
        """Add a worker and probe it at once (not on the next interval)."""
        if url in self.workers:
            return self.workers[url]
        t = self._breaker_template
        worker = Worker(url, self._connect(url), CircuitBreaker(t.failure_threshold, t.success_threshold, t.open_s))
        worker.on_change = self.refresh
        self.workers[url] = worker
        log.info("worker added", extra={"worker": url})
        for callback in self.on_added:
            callback(url)
        await self._probe(worker)
        self.refresh()
        return worker

    async def _probe(self, worker: Worker) -> None:
        await worker.probe(self._health)
        if worker.state is WorkerState.READY:
            for callback in self.on_probed:
                callback(worker)

    async def remove(self, url: str) -> None:
        worker = self.workers.pop(url, None)
        if worker is None:
            return
        log.info("worker removed", extra={"worker": url})
        worker.on_change = None
        for callback in self.on_removed:
            callback(url)
        self.refresh()
        await worker.close()

    def at_target(self, worker: Worker) -> bool:
        return self.target_version is None or worker.weight_version == self.target_version

    def routable(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.is_routable and self.at_target(w)]

    def why_not_routable(self, worker: Worker) -> str:
        """Empty when the worker gets traffic; else the first reason, for a person."""
        if worker.state is not WorkerState.READY:
            return worker.state.value
        if not worker.breaker.allows():
            return "breaker open"
        if worker.hold is not None:
            return worker.hold
        if not self.at_target(worker):
            return f"at weight version {worker.weight_version!r}, the fleet at {self.target_version!r}"
        return ""

    def describe(self) -> str:
        """Each worker's state, for a person: "h:p ready, h:p not_ready, h:p ready (breaker open)"."""
        if not self.workers:
            return "no workers known"
        parts = []
        for w in self.workers.values():
            why = self.why_not_routable(w)
            parts.append(f"{w.url} {w.state.value}" + (f" ({why})" if why and why != w.state.value else ""))
        return ", ".join(parts)

    def refresh(self) -> None:
        now = bool(self.routable())
        if now != self._has_routable.is_set():
            if now:
                self._has_routable.set()
            else:
                self._has_routable.clear()
            log.info("pool routable" if now else "pool has no routable worker", extra={"workers": self.describe()})
        ready = now or (self.updating and bool(self.workers))
        if ready != self._ready:
            self._ready = ready
            for callback in self.on_routable:
                callback(ready)

    def report_routable(self, callback: Callable[[bool], None]) -> None:
        """Call `callback` now with whether the pool is ready (a worker routable, or an update running), and again
        at every change."""
        self.on_routable.append(callback)
        callback(self._ready)

    async def wait_routable(self, timeout_s: float) -> bool:
        """Until some worker is routable (True) or `timeout_s` passes (False)."""
        self.refresh()
        if self._has_routable.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._has_routable.wait(), max(0.0, timeout_s))
        return bool(self.routable())

    def any_model_info(self) -> WorkerModelInfo | None:
        return next((w.model_info for w in self.workers.values() if w.model_info is not None), None)

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            workers = list(self.workers.values())
            due = [w for w in workers if w.state is not WorkerState.FAILED or int(started) % 5 == 0]
            await asyncio.gather(*(self._probe(w) for w in due), return_exceptions=True)
            self.refresh()  # a breaker's open period may have run out
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
