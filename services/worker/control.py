"""`mimo.v1.WorkerControl` beside SglangScheduler: pause, continue, weight updates and the weight version.

`GenerationGate` is the state both servicers share. Generate passes through it: while the worker is paused
a new request waits at the gate (its deadline still applies) and runs once generation continues, so a
fleet update fails no request. A weight update only runs with nothing in flight, so every request runs
under one weight version from start to end; the version it ran under is sent to the caller as the
initial metadata `mimo-weight-version` of its Generate stream.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from mimo_client.v1 import worker_control_pb2 as pb
from mimo_client.v1 import worker_control_pb2_grpc as pb_grpc

from services.worker import metrics
from services.worker.engine_api import Engine, EngineUnavailable, WeightsRejected

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["WorkerControl"].full_name
VERSION_METADATA = "mimo-weight-version"
DEFAULT_TIMEOUT_S = 600.0
ABORT_RETRY_S = 0.2


class GenerationGate:
    """Admission of Generate calls: open, or paused (callers wait); the set of requests in flight."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_flight: set[str] = set()
        self._num_waiting = 0
        self.update_lock = asyncio.Lock()
        self.model_path = ""

    @property
    def is_paused(self) -> bool:
        return not self._open.is_set()

    @property
    def num_in_flight(self) -> int:
        return len(self._in_flight)

    @asynccontextmanager
    async def admit(self, request_id: str) -> AsyncIterator[str]:
        """Wait while paused, then hold the request in flight; yields the weight version it runs under."""
        self._num_waiting += 1
        try:
            await self._open.wait()
        finally:
            self._num_waiting -= 1
        self._in_flight.add(request_id)
        self._idle.clear()
        try:
            yield self._engine.model_info().weight_version
        finally:
            self._in_flight.discard(request_id)
            if not self._in_flight:
                self._idle.set()

    async def pause(self, abort: bool, timeout_s: float) -> tuple[int, bool]:
        """Close the gate; abort what runs or let it finish. Returns (requests aborted, drained)."""
        self._open.clear()
        if not abort:
            return 0, await self.wait_idle(timeout_s)
        aborted: set[str] = set()
        deadline = time.monotonic() + timeout_s
        while self._in_flight and time.monotonic() < deadline:  # again for one admitted but not yet queued
            for request_id in self._in_flight - aborted:
                if await self._engine.abort(request_id):
                    aborted.add(request_id)
            await self.wait_idle(min(ABORT_RETRY_S, max(0.0, deadline - time.monotonic())))
        return len(aborted), not self._in_flight

    async def wait_idle(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def resume(self) -> int:
        released = self._num_waiting
        self._open.set()
        return released


def timeout_of(value: float) -> float | None:
    """A request's timeout_s: 0 means the default; None when it is not a usable number of seconds."""
    if not math.isfinite(value) or not 0 <= value <= DEFAULT_TIMEOUT_S:
        return None
    return value or DEFAULT_TIMEOUT_S


class ControlServicer(pb_grpc.WorkerControlServicer):
    def __init__(self, engine: Engine, gate: GenerationGate) -> None:
        self._engine = engine
        self._gate = gate

    async def PauseGeneration(
        self, request: pb.PauseGenerationRequest, context: grpc.aio.ServicerContext
    ) -> pb.PauseGenerationResponse:
        if request.mode not in pb.PauseMode.values():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"mode: unknown pause mode {request.mode}")
        if (timeout_s := timeout_of(request.timeout_s)) is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"timeout_s: must be in [0, {DEFAULT_TIMEOUT_S:g}]")
        is_abort = request.mode != pb.PAUSE_MODE_WAIT
        aborted, drained = await self._gate.pause(is_abort, timeout_s or DEFAULT_TIMEOUT_S)
        log.info("generation paused", extra={"mode": "abort" if is_abort else "wait", "aborted": aborted})
        return pb.PauseGenerationResponse(num_aborted=aborted, num_in_flight=self._gate.num_in_flight, drained=drained)

    async def ContinueGeneration(
        self, request: pb.ContinueGenerationRequest, context: grpc.aio.ServicerContext
    ) -> pb.ContinueGenerationResponse:
        if self._gate.update_lock.locked():
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "a weight update is running; continue after it")
        return pb.ContinueGenerationResponse(num_released=self._gate.resume())

    async def UpdateWeights(
        self, request: pb.UpdateWeightsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateWeightsResponse:
        if not request.model_path:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "model_path: must be set")
        if not request.weight_version:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "weight_version: must be set")
        if timeout_of(request.timeout_s) is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"timeout_s: must be in [0, {DEFAULT_TIMEOUT_S:g}]")
        if self._gate.update_lock.locked():
            await context.abort(grpc.StatusCode.ABORTED, "another weight update is running on this worker")
        async with self._gate.update_lock:
            was_paused = self._gate.is_paused
            try:
                return await self._update(request, context, was_paused)
            finally:
                if not was_paused:
                    self._gate.resume()

    async def _update(
        self, request: pb.UpdateWeightsRequest, context: grpc.aio.ServicerContext, was_paused: bool
    ) -> pb.UpdateWeightsResponse:
        timeout_s = timeout_of(request.timeout_s) or DEFAULT_TIMEOUT_S
        if was_paused:
            drained = await self._gate.wait_idle(timeout_s)
        else:
            _, drained = await self._gate.pause(False, timeout_s)
        if not drained:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{self._gate.num_in_flight} requests still running after {timeout_s:g} s; pause with mode abort",
            )
        started = time.perf_counter()
        try:
            await self._engine.update_weights(request.model_path, request.weight_version)
        except WeightsRejected as e:
            metrics.WEIGHT_UPDATES.labels(outcome="rejected").inc()
            log.warning("weight update refused", extra={"model_path": request.model_path, "reason": str(e)})
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except EngineUnavailable as e:
            metrics.WEIGHT_UPDATES.labels(outcome="unavailable").inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        load_s = time.perf_counter() - started
        flushed = True
        if not request.HasField("flush_cache") or request.flush_cache:
            flushed = await self._engine.flush_cache()
        self._gate.model_path = request.model_path
        metrics.WEIGHT_UPDATES.labels(outcome="ok").inc()
        metrics.set_weight_version(request.weight_version)
        log.info("weights updated", extra={"weight_version": request.weight_version, "load_s": round(load_s, 3)})
        message = "weights updated" + ("" if flushed else "; the prefix cache could not be flushed")
        return pb.UpdateWeightsResponse(weight_version=request.weight_version, load_s=load_s, message=message)

    async def GetWeightVersion(
        self, request: pb.GetWeightVersionRequest, context: grpc.aio.ServicerContext
    ) -> pb.WeightVersionInfo:
        try:
            info = self._engine.model_info()
        except EngineUnavailable as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        return pb.WeightVersionInfo(
            weight_version=info.weight_version,
            model_path=self._gate.model_path or info.model_path,
            is_paused=self._gate.is_paused,
            num_in_flight=self._gate.num_in_flight,
            is_updating=self._gate.update_lock.locked(),
        )
