"""`mimo.v1.Inference`: proto in, a Job to the gateway, proto out; errors become status codes."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from mimo_client.v1 import inference_pb2, inference_pb2_grpc

from services.router.admission import Rejected
from services.router.dispatch import DispatchError
from services.router.gateway import Gateway, Job
from services.router.requests import InvalidRequest, validate_common, validate_messages, validate_sampling


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


async def abort_with(context: grpc.aio.ServicerContext, error: Exception) -> None:
    """Turn a domain error into the gRPC status the contract names."""
    if isinstance(error, InvalidRequest):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
    if isinstance(error, Rejected):
        retry_ms = int(error.retry_after_s * 1000)
        context.set_trailing_metadata((("retry-after-ms", str(retry_ms)),))
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{error}; retry after {retry_ms} ms")
    if isinstance(error, DispatchError):
        await context.abort(error.code, str(error))
    raise error


def unary_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except (InvalidRequest, Rejected, DispatchError) as e:
            await abort_with(context, e)

    return wrapper


def stream_errors(method: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for response in method(self, request, context):
                yield response
        except (InvalidRequest, Rejected, DispatchError) as e:
            await abort_with(context, e)

    return wrapper


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def _job(self, request: Any, context, method: str, stream: bool, ids: list[int], split_reasoning: bool) -> Job:
        """The fields Generate and Chat requests share (checked by the caller before encoding)."""
        return Job(
            method,
            ids,
            request.sampling,
            max(1, request.n),
            request.return_logprobs,
            request.top_logprobs,
            request.priority,
            split_reasoning,
            stream,
            request.request_id,
            deadline=deadline_of(context),
        )

    def _check_common(self, request: Any) -> None:
        self.gateway.check_model(request.model)
        validate_sampling(request.sampling)
        validate_common(request.n, request.top_logprobs)

    def _generate_job(self, request: inference_pb2.GenerateRequest, context, method: str, stream: bool) -> Job:
        self._check_common(request)
        kind = request.WhichOneof("input")
        if kind is None:
            raise InvalidRequest("input", "set text or token_ids")
        if kind == "text" and not request.text:
            raise InvalidRequest("text", "must not be empty")
        ids = self.gateway.tokenizer.encode(request.text) if kind == "text" else list(request.token_ids.ids)
        return self._job(request, context, method, stream, ids, request.split_reasoning)

    def _chat_job(self, request: inference_pb2.ChatRequest, context, method: str, stream: bool) -> Job:
        self._check_common(request)
        validate_messages(request.messages)
        return self._job(request, context, method, stream, self.gateway.chat_ids(request.messages), True)

    async def _respond(self, job: Job, response_type: Any) -> Any:
        choices, usage = await self.gateway.collect(job)
        return response_type(request_id=job.request_id, model=self.gateway.model_name, choices=choices, usage=usage)

    async def _stream(self, job: Job, response_type: Any) -> AsyncIterator[Any]:
        async for delta in self.gateway.run(job):
            yield response_type(request_id=job.request_id, delta=delta)
        yield response_type(request_id=job.request_id, usage=self.gateway.usage(job))

    @unary_errors
    async def Generate(self, request, context):
        return await self._respond(
            self._generate_job(request, context, "Generate", False), inference_pb2.GenerateResponse
        )

    @stream_errors
    async def GenerateStream(self, request, context):
        job = self._generate_job(request, context, "GenerateStream", True)
        async for response in self._stream(job, inference_pb2.GenerateStreamResponse):
            yield response

    @unary_errors
    async def Chat(self, request, context):
        return await self._respond(self._chat_job(request, context, "Chat", False), inference_pb2.ChatResponse)

    @stream_errors
    async def ChatStream(self, request, context):
        job = self._chat_job(request, context, "ChatStream", True)
        async for response in self._stream(job, inference_pb2.ChatStreamResponse):
            yield response

    async def ListModels(self, request, context):
        pool = self.gateway.dispatcher.pool
        model = inference_pb2.ModelInfo(
            id=self.gateway.model_name,
            max_context_tokens=self.gateway.max_context,
            vocab_size=self.gateway.tokenizer.snapshot.vocab_size,
            num_workers=len(pool.routable()),
            mtp_enabled=any(w.load.accept_length > 0 for w in pool.routable()),
        )
        return inference_pb2.ListModelsResponse(models=[model])
