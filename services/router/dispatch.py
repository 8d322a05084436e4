"""Send one request (n samples) to a worker: pick it by policy, retry elsewhere before the first response,
abort on the worker when the caller goes away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from services.router import metrics
from services.router.domain import (
    DeadlineExceeded,
    InvalidRequest,
    Rejected,
    Unavailable,
    WorkerCallFailed,
    WorkerEvent,
)
from services.router.domain import SampleComplete as Complete
from services.router.domain import WorkerRequest as Request
from services.router.policy import Policy, RouteRequest
from services.router.workers import Worker, WorkerPool

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, pool: WorkerPool, policy: Policy, max_attempts: int = 3, max_wait_s: float = 30.0) -> None:
        self.pool = pool
        self.policy = policy
        self.max_attempts = max_attempts
        self.max_wait_s = max_wait_s  # how long a request waits for a first routable worker
        self._aborts: set[asyncio.Task[None]] = set()
        self._running: dict[str, Worker] = {}  # worker request id -> the worker it runs on

    def _untried(self, tried: set[str]) -> bool:
        return any(w.url not in tried for w in self.pool.routable())

    async def _choose(self, route: RouteRequest, tried: set[str], deadline: float | None) -> Worker:
        workers = [w for w in self.pool.routable() if w.url not in tried]
        if not workers and tried:
            raise Unavailable(f"all {len(tried)} workers tried failed")
        if not workers:  # start-up, or every worker restarting: wait (bounded) instead of failing at once
            started = time.monotonic()
            limit = self.max_wait_s if deadline is None else min(self.max_wait_s, deadline - started)
            await self.pool.wait_routable(limit)
            workers = self.pool.routable()
            if not workers:
                waited = time.monotonic() - started
                raise Unavailable(f"no worker became ready within {waited:.1f}s ({self.pool.describe()})")
        decision = self.policy.select(route, workers)
        self.policy.on_dispatch(route, decision.worker)
        return decision.worker

    async def generate(
        self, request: Request, route: RouteRequest, deadline: float | None
    ) -> AsyncIterator[WorkerEvent]:
        """Events of one worker. Before the first event a failure moves the request to another worker; after it,
        a failure ends the stream with Unavailable saying how much was produced."""
        tried: set[str] = set()
        n = request.n
        for attempt in range(self.max_attempts):
            worker = await self._choose(route, tried, deadline)
            tried.add(worker.url)
            timeout = None if deadline is None else max(0.001, deadline - time.monotonic())
            worker.add_in_flight(n)
            received = finished = 0
            failed = False
            self._running[request.request_id] = worker
            try:
                async for event in worker.client.generate(request, timeout):
                    received += 1
                    finished += isinstance(event, Complete)
                    yield event
                worker.record_success()
                return
            except WorkerCallFailed as e:
                failed = True  # the worker ended the call itself: nothing of it is left to abort
                if e.transport:
                    worker.record_failure("connect" if e.code == "UNAVAILABLE" and not received else "stream")
                if received:
                    raise Unavailable(
                        f"a worker failed mid-stream ({e.code}) after {received} responses and {finished} of {n} "
                        "finished samples"
                    ) from e
                if e.retryable and attempt + 1 < self.max_attempts and self._untried(tried):
                    metrics.RETRIES.labels(e.code.lower()).inc()
                    log.info("retrying on another worker", extra={"worker": worker.url, "code": e.code})
                    continue
                raise _public(e) from e
            finally:
                self._running.pop(request.request_id, None)
                worker.add_in_flight(-n)
                if finished < n and not failed:  # the caller left early
                    self._abort(worker, request.request_id)
        raise Unavailable(f"gave up after {self.max_attempts} attempts")

    async def abort_running(self, request_id: str) -> bool:
        """Ask the worker running `request_id` to end it now (its samples finish "abort" with partial output)."""
        worker = self._running.get(request_id)
        if worker is None:
            return False
        try:
            await worker.client.abort(request_id, "partial rollout")
        except WorkerCallFailed:
            return False
        return True

    def _abort(self, worker: Worker, request_id: str) -> None:
        """Tell the worker to drop the request (cancelling the call does too; this is belt and braces)."""

        async def abort() -> None:
            with contextlib.suppress(WorkerCallFailed):
                await worker.client.abort(request_id, "client cancelled")

        task = asyncio.get_running_loop().create_task(abort())
        self._aborts.add(task)
        task.add_done_callback(self._aborts.discard)


def _public(e: WorkerCallFailed) -> Exception:
    """A worker's refusal as the caller should see it: no worker address, no worker-protocol field names."""
    if e.deadline:
        return DeadlineExceeded("deadline exceeded waiting for the worker")
    if e.invalid:
        return InvalidRequest("request", f"the worker refused it: {e.detail}")
    if e.code == "RESOURCE_EXHAUSTED":
        return Rejected("worker_full", f"every worker tried is full: {e.detail}", 1.0)
    return Unavailable(f"the worker could not serve the request ({e.code}: {e.detail})")
