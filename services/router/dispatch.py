"""Send one request (n samples) to a worker: pick it by policy, retry elsewhere before the first response,
abort on the worker when the caller goes away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import grpc
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb

from services.router import metrics
from services.router.policy import Policy, RouteRequest
from services.router.workers import Worker, WorkerPool

log = logging.getLogger(__name__)

RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.ABORTED,
}
TRANSPORT_FAILURES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


class DispatchError(Exception):
    """The request could not be served; carries the gRPC status for the client."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Dispatcher:
    def __init__(self, pool: WorkerPool, policy: Policy, max_attempts: int = 3) -> None:
        self.pool = pool
        self.policy = policy
        self.max_attempts = max_attempts
        self._aborts: set[asyncio.Task[None]] = set()

    def _choose(self, route: RouteRequest, tried: set[str]) -> Worker:
        workers = [w for w in self.pool.routable() if w.url not in tried]
        if not workers:
            if tried:
                raise DispatchError(grpc.StatusCode.UNAVAILABLE, f"all {len(tried)} workers tried failed")
            raise DispatchError(grpc.StatusCode.UNAVAILABLE, "no worker is ready to serve")
        decision = self.policy.select(route, workers)
        self.policy.on_dispatch(route, decision.worker)
        return decision.worker

    async def generate(
        self, request: pb.GenerateRequest, route: RouteRequest, deadline: float | None
    ) -> AsyncIterator[pb.GenerateResponse]:
        """Responses of one worker. Before the first response a failure moves the request to another worker;
        after it, a failure ends the stream with UNAVAILABLE saying how much was produced."""
        tried: set[str] = set()
        n = max(1, request.sampling_params.n)
        for attempt in range(self.max_attempts):
            worker = self._choose(route, tried)
            tried.add(worker.url)
            timeout = None if deadline is None else max(0.001, deadline - time.monotonic())
            call = worker.stub.Generate(request, timeout=timeout)
            worker.add_in_flight(n)
            received = finished = 0
            try:
                async for response in call:
                    received += 1
                    finished += response.HasField("complete")
                    yield response
                worker.record_success()
                return
            except grpc.aio.AioRpcError as e:
                code = e.code()
                if code in TRANSPORT_FAILURES:
                    worker.record_failure(
                        "connect" if code == grpc.StatusCode.UNAVAILABLE and not received else "stream"
                    )
                if received:
                    raise DispatchError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"worker {worker.url} failed mid-stream ({code.name}: {e.details()}) after "
                        f"{received} responses and {finished} of {n} finished samples",
                    ) from e
                if code in RETRYABLE and attempt + 1 < self.max_attempts and self.pool.routable():
                    metrics.RETRIES.labels(code.name.lower()).inc()
                    log.info("retrying on another worker", extra={"worker": worker.url, "code": code.name})
                    continue
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise DispatchError(code, "deadline exceeded waiting for the worker") from e
                raise DispatchError(
                    code if code not in TRANSPORT_FAILURES else grpc.StatusCode.UNAVAILABLE,
                    f"worker {worker.url}: {e.details()}",
                ) from e
            finally:
                worker.add_in_flight(-n)
                if finished < n and not call.done():
                    call.cancel()
                    self._abort(worker, request.request_id)
        raise DispatchError(grpc.StatusCode.UNAVAILABLE, f"gave up after {self.max_attempts} attempts")

    def _abort(self, worker: Worker, request_id: str) -> None:
        """Tell the worker to drop the request (cancelling the call does too; this is belt and braces)."""

        async def abort() -> None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await worker.stub.Abort(pb.AbortRequest(request_id=request_id, reason="client cancelled"), timeout=2)

        task = asyncio.get_running_loop().create_task(abort())
        self._aborts.add(task)
        task.add_done_callback(self._aborts.discard)
