"""Admission control: at most `max_in_flight` requests run; up to `max_queue` wait (highest priority first)
for at most `queue_timeout_s`; the rest are refused with retry advice."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from services.router import metrics
from services.router.domain import Rejected


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    max_in_flight: int = 1024
    max_queue: int = 1024
    queue_timeout_s: float = 30.0


class Admission:
    def __init__(self, config: AdmissionConfig) -> None:
        self.config = config
        self.in_flight = 0
        self.queued = 0  # waiters not yet granted nor given up
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # (-priority, seq, future)
        self._seq = itertools.count()

    def _retry_after_s(self) -> float:
        return min(5.0, 0.05 * (1 + self.queued / max(1, self.config.max_in_flight)))

    @asynccontextmanager
    async def slot(self, priority: int = 0, timeout_s: float | None = None) -> AsyncIterator[float]:
        """Hold one in-flight slot for the body; yields the time spent queued."""
        start = time.monotonic()
        if self.in_flight >= self.config.max_in_flight or self.queued:
            await self._wait(priority, timeout_s)
        else:
            self.in_flight += 1
        waited_s = time.monotonic() - start
        metrics.QUEUE_TIME.observe(waited_s)
        metrics.IN_FLIGHT.set(self.in_flight)
        try:
            yield waited_s
        finally:
            self.in_flight -= 1
            self._wake()
            metrics.IN_FLIGHT.set(self.in_flight)

    async def _wait(self, priority: int, timeout_s: float | None) -> None:
        if self.queued >= self.config.max_queue:
            metrics.REJECTED.labels("queue_full").inc()
            raise Rejected(
                "queue_full",
                f"router at capacity: {self.in_flight} requests in flight and {self.queued} queued",
                self._retry_after_s(),
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (-priority, next(self._seq), future))
        self.queued += 1
        self._wake()  # a slot may be free already (the queue only holds arrivals in priority order)
        metrics.QUEUED.set(self.queued)
        limit = self.config.queue_timeout_s if timeout_s is None else min(timeout_s, self.config.queue_timeout_s)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout=limit)
        except TimeoutError:
            if future.done() and not future.cancelled():  # granted just as the timer fired: keep it
                return
            future.cancel()
            self.queued -= 1
            metrics.REJECTED.labels("queue_timeout").inc()
            raise Rejected(
                "queue_timeout", f"waited {limit:.1f}s in the router queue without a free slot", self._retry_after_s()
            ) from None
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.in_flight -= 1  # a slot was handed over but the caller left: pass it on
                self._wake()
            else:
                self.queued -= 1
            future.cancel()
            raise
        finally:
            metrics.QUEUED.set(self.queued)

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.config.max_in_flight:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                self.in_flight += 1
                self.queued -= 1
                future.set_result(None)
