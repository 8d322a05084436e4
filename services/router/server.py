"""`mimo.v1.Inference`, `mimo.v1.Rollout` and `mimo.v1.Admin` over the pipeline and the fleet: proto in (wire.py), domain call, proto out;
the one map from domain errors to gRPC status codes."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from mimo_client.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc, rollout_pb2, rollout_pb2_grpc

from services.router import admin_wire, wire
from services.router.domain import (
    Conflict,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidRequest,
    Rejected,
    RouterError,
    Unauthenticated,
    Unavailable,
    UnknownModel,
)
from services.router.fleet import Fleet
from services.router.pipeline import Generation, Pipeline
from services.router.rollout import Scorer, stream_rollout
from services.router.rollout_runs import RolloutRuns
from services.router.scorers import ScorerPool

STATUS: dict[type[RouterError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    UnknownModel: grpc.StatusCode.NOT_FOUND,
    Rejected: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Conflict: grpc.StatusCode.ABORTED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
}


def retry_advice(retry_after_s: float, message: str) -> tuple[tuple[str, str | bytes], ...]:
    """Standard retry advice: google.rpc.RetryInfo in grpc-status-details-bin, plus grpc-retry-pushback-ms and
    the older retry-after-ms for clients that read those."""
    retry_ms = int(retry_after_s * 1000)
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=(retry_ms % 1000) * 1_000_000))
    info.retry_delay.seconds = retry_ms // 1000
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message)
    status.details.add().Pack(info)
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("grpc-retry-pushback-ms", str(retry_ms)),
        ("retry-after-ms", str(retry_ms)),
    )


async def abort_with(context: grpc.aio.ServicerContext, error: RouterError) -> None:
    """Turn a domain error into the gRPC status the contract names (retry advice in trailing metadata)."""
    code = STATUS.get(type(error), grpc.StatusCode.INTERNAL)
    message = str(error)
    if isinstance(error, Rejected):
        message = f"{error}; retry after {int(error.retry_after_s * 1000)} ms"
        context.set_trailing_metadata(retry_advice(error.retry_after_s, message))
    await context.abort(code, message)


def unary_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except RouterError as e:
            await abort_with(context, e)

    return wrapper


def stream_errors(method: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for response in method(self, request, context):
                yield response
        except RouterError as e:
            await abort_with(context, e)

    return wrapper


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def _prepare(self, request: Any, chat: bool, stream: bool, context: grpc.aio.ServicerContext) -> Generation:
        self.pipeline.check_model(request.model)
        deadline = wire.deadline_in(context.time_remaining())
        method = ("Chat" if chat else "Generate") + ("Stream" if stream else "")
        parse = wire.chat_request if chat else wire.generate_request
        return await self.pipeline.prepare(parse(request, method, stream, deadline))

    async def _respond(self, gen: Generation, response_type: Any) -> Any:
        await self.pipeline.run(gen)
        return response_type(
            request_id=gen.request_id,
            model=self.pipeline.model_name,
            choices=[wire.choice_pb(c) for c in gen.choices()],
            usage=wire.usage_pb(gen.usage()),
        )

    async def _stream(self, gen: Generation, response_type: Any) -> AsyncIterator[Any]:
        async for delta in self.pipeline.stream(gen):
            yield response_type(request_id=gen.request_id, delta=wire.delta_pb(delta))
        yield response_type(request_id=gen.request_id, usage=wire.usage_pb(gen.usage()))

    @unary_errors
    async def Generate(
        self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.GenerateResponse:
        return await self._respond(await self._prepare(request, False, False, context), inference_pb2.GenerateResponse)

    @stream_errors
    async def GenerateStream(
        self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inference_pb2.GenerateStreamResponse]:
        gen = await self._prepare(request, False, True, context)
        async for response in self._stream(gen, inference_pb2.GenerateStreamResponse):
            yield response

    @unary_errors
    async def Chat(
        self, request: inference_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.ChatResponse:
        return await self._respond(await self._prepare(request, True, False, context), inference_pb2.ChatResponse)

    @stream_errors
    async def ChatStream(
        self, request: inference_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inference_pb2.ChatStreamResponse]:
        gen = await self._prepare(request, True, True, context)
        async for response in self._stream(gen, inference_pb2.ChatStreamResponse):
            yield response

    async def ListModels(
        self, request: inference_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.ListModelsResponse:
        card = self.pipeline.model_card()
        model = inference_pb2.ModelInfo(
            id=card.id,
            max_context_tokens=card.max_context_tokens,
            vocab_size=card.vocab_size,
            num_workers=card.num_workers,
            mtp_enabled=card.mtp_enabled,
        )
        return inference_pb2.ListModelsResponse(models=[model])


class RolloutServicer(rollout_pb2_grpc.RolloutServicer):
    def __init__(
        self, pipeline: Pipeline, scorer: Scorer, runs: RolloutRuns | None = None, fleet: Fleet | None = None
    ) -> None:
        self.pipeline = pipeline
        self.scorer = scorer
        self.runs = runs or RolloutRuns(ScorerPool(scorer))  # sources, scorers, policies (issue 18)
        self.fleet = fleet  # weight updates wait for running rollouts (fleet.py)

    @stream_errors
    async def Rollout(
        self, request: rollout_pb2.RolloutRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rollout_pb2.RolloutEvent]:
        deadline = wire.deadline_in(context.time_remaining())
        spec = wire.rollout_spec(request, self.pipeline.vocab_size, deadline)
        held = self.fleet.rollout(spec.min_weight_version, deadline) if self.fleet else contextlib.nullcontext()
        async with held:
            async for event in stream_rollout(self.runs.build(self.pipeline, spec)):
                yield wire.rollout_event_pb(spec, event)


class AdminServicer(admin_pb2_grpc.AdminServicer):
    """Fleet weight updates (RL weight sync) and versions; behind the same API keys as inference."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    @unary_errors
    async def UpdateWeights(
        self, request: admin_pb2.FleetUpdateRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.FleetUpdateResponse:
        model_path, version, abort_running, timeout_s = admin_wire.update_args(request)
        return admin_wire.update_pb(await self.fleet.update(model_path, version, abort_running, timeout_s))

    async def GetWeightVersions(
        self, request: admin_pb2.GetWeightVersionsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.FleetVersions:
        return admin_wire.versions_pb(self.fleet.versions())
