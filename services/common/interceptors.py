"""Server interceptors: per-method request counter and latency histogram, and an access log at debug."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc

from services.common.auth import AUTH_REQUESTS, CURRENT_KEY, ApiKey, KeyRing, Limited
from services.common.metrics import RpcMetrics

log = logging.getLogger("access")


def _code_name(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    code = context.code()
    if code is None:
        if error is None:
            return "OK"
        return (
            "CANCELLED" if isinstance(error, BaseException) and type(error).__name__ == "CancelledError" else "UNKNOWN"
        )
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every RPC by method and final status code."""

    def __init__(self, metrics: RpcMetrics) -> None:
        self._metrics = metrics

    def _observe(
        self, method: str, context: grpc.aio.ServicerContext, start: float, error: BaseException | None
    ) -> None:
        code = _code_name(context, error)
        elapsed_s = time.perf_counter() - start
        self._metrics.requests.labels(method, code).inc()
        self._metrics.latency.labels(method, code).observe(elapsed_s)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("rpc", extra={"method": method, "code": code, "elapsed_ms": round(elapsed_s * 1e3, 3)})

    def _wrap_unary(self, method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start, error = time.perf_counter(), None
            try:
                return await behavior(request, context)
            except BaseException as e:
                error = e
                raise
            finally:
                self._observe(method, context, start, error)

        return wrapper

    def _wrap_stream(
        self, method: str, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            start, error = time.perf_counter(), None
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as e:
                error = e
                raise
            finally:
                self._observe(method, context, start, error)

        return wrapper

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(method, handler.stream_unary),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(method, handler.stream_stream), handler.request_deserializer, handler.response_serializer
        )


class DrainInterceptor(grpc.aio.ServerInterceptor):
    """Once the server drains, new calls (health checks aside) are refused UNAVAILABLE at once, so clients retry on
    another replica; grpc's own shutdown answers a call that races it CANCELLED, which clients do not retry."""

    def __init__(self) -> None:
        self.is_draining = False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if self.is_draining and not handler_call_details.method.startswith("/grpc.health.v1.Health/"):
            return _deny(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry on another replica")
        return await continuation(handler_call_details)


class KeyRingInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without a known key (UNAUTHENTICATED) or over a key's limit (RESOURCE_EXHAUSTED with retry
    advice); health checks stay open. The key is visible to the handler as CURRENT_KEY."""

    def __init__(self, ring: KeyRing, retry_metadata: Callable[[float, str], Sequence[tuple[str, Any]]]) -> None:
        self._ring = ring
        self._retry_metadata = retry_metadata

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if handler_call_details.method.startswith(("/grpc.health.v1.Health/", "/grpc.reflection.")):
            return await continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        key = self._ring.authenticate(metadata.get("authorization"))
        if key is None:
            AUTH_REQUESTS.labels("", "unauthenticated").inc()
            return _deny(grpc.StatusCode.UNAUTHENTICATED, "missing or unknown API key (authorization: Bearer …)")
        try:
            self._ring.admit(key)
        except Limited as e:
            AUTH_REQUESTS.labels(key.name, "limited").inc()
            return _deny(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e), self._retry_metadata(e.retry_after_s, str(e)))
        AUTH_REQUESTS.labels(key.name, "ok").inc()
        handler = await continuation(handler_call_details)
        return _with_key(handler, key, self._ring) if handler is not None else handler


def _deny(code: grpc.StatusCode, message: str, trailers: Sequence[tuple[str, Any]] = ()) -> grpc.RpcMethodHandler:
    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if trailers:
            context.set_trailing_metadata(tuple(trailers))
        await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(deny)


def _with_key(handler: grpc.RpcMethodHandler, key: ApiKey, ring: KeyRing) -> grpc.RpcMethodHandler:
    if handler.unary_unary:
        inner_unary = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            CURRENT_KEY.set((key, ring))
            return await inner_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer, handler.response_serializer)
    if handler.unary_stream:
        inner_stream = handler.unary_stream

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            CURRENT_KEY.set((key, ring))
            async for response in inner_stream(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(stream, handler.request_deserializer, handler.response_serializer)
    return handler  # client-streaming calls: none in the public API
