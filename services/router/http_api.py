"""The router's OpenAI-compatible HTTP front end (aiohttp): chat, completions, models, health, SSE streaming.

Same pipeline as the gRPC servicers (admission, routing, retries, breakers), same bearer-token check, errors in
OpenAI's shape. A client that disconnects cancels its handler (aiohttp `handler_cancellation`), which cancels the
pipeline stream and so the worker call. With tracing on, the app is built after `setup_tracing` instrumented
aiohttp (services/common/tracing.py), so a request's `traceparent` header is the parent of its router span.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, cast

from aiohttp import web

from services.common.auth import CURRENT_KEY, KeyRing, Limited
from services.common.server import StartupError
from services.router import http_render as r
from services.router import http_wire, metrics
from services.router.domain import Delta, InvalidRequest, Rejected, RouterError, Unauthenticated, Unavailable
from services.router.pipeline import Generation, Pipeline
from services.router.prompts import TokenizerSnapshot

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 16 * 1024 * 1024  # a 1M-character prompt, JSON-escaped, with room
OPEN_PATHS = ("/health", "/health/live")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json", headers=headers)


def error_response(error: Exception, param: str | None = None) -> web.Response:
    e = r.http_error(error, param)
    headers = {"Retry-After": str(max(1, round(e.retry_after_s)))} if e.retry_after_s is not None else None
    return json_response(e.body, e.status, headers)


def sse(body: Any) -> bytes:
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


class SseResponse(web.StreamResponse):
    """A stream whose headers go out in one send with its first event, as aiohttp's own web.Response buffers them
    (`prepare` alone writes nothing): one send fewer before the first token."""

    _send_headers_immediately = False


class HttpApi:
    def __init__(
        self,
        pipeline: Pipeline,
        tokenizer: Callable[[], TokenizerSnapshot],
        listen: str,
        keys: KeyRing | None = None,
        grace_s: float = 30.0,
    ) -> None:
        self.pipeline = pipeline
        self._tokenizer = tokenizer
        self._listen = listen
        self._keys = keys
        self._grace_s = grace_s
        self._created = int(time.time())
        self._draining = False
        self._runner: web.AppRunner | None = None
        self._cleanup: asyncio.Task[None] | None = None
        self.port = 0
        self.app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._middleware])
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.app.router.add_post("/v1/completions", self.completions)
        self.app.router.add_get("/v1/models", self.models)
        self.app.router.add_get("/v1/models/{model:.+}", self.model)
        self.app.router.add_get("/health", self.health)
        self.app.router.add_get("/health/live", self.live)

    # --- lifecycle: start after the router's own start, drain with the gRPC server -------------------------------
    async def start(self) -> None:
        host, _, port = self._listen.rpartition(":")
        self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host or "0.0.0.0", int(port), shutdown_timeout=self._grace_s)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            raise StartupError(f"--http-listen: cannot bind {self._listen}: {e.strerror}") from e
        self.port = self._runner.addresses[0][1]
        log.info("http serving", extra={"listen": f"{host}:{self.port}"})

    async def drain(self) -> None:
        """/health turns 503 and new requests get 503; the listener closes; in-flight requests may finish."""
        self._draining = True
        if self._runner is not None and self._cleanup is None:
            self._cleanup = asyncio.get_running_loop().create_task(self._runner.cleanup())

    async def stop(self) -> None:
        await self.drain()
        if self._cleanup is not None:
            await self._cleanup

    # --- middleware: auth, error shape for aiohttp's own errors, metrics -----------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        status = 500
        try:
            response = await self._guarded(request, handler)
            status = response.status
            return response
        except asyncio.CancelledError:
            status = 499  # the client went away
            raise
        finally:
            metrics.HTTP_REQUESTS.labels(route, str(status)).inc()
            metrics.HTTP_LATENCY.labels(route).observe(time.perf_counter() - start)

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        authorization = request.headers.get("Authorization")
        if self._keys is not None and request.path not in OPEN_PATHS:
            key = self._keys.authenticate(authorization)
            if key is None:
                return error_response(Unauthenticated("missing or unknown API key (Authorization: Bearer …)"))
            try:
                self._keys.admit(key)
            except Limited as e:
                return error_response(Rejected("key_limit", str(e), e.retry_after_s))
            CURRENT_KEY.set((key, self._keys))
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            kind = "invalid_request_error" if e.status < 500 else "server_error"
            return json_response(r.error_body(e.reason, kind, None, str(e.status)), e.status)

    # --- routes -----------------------------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        workers = self.pipeline.model_card().num_workers
        ready = workers > 0 and not self._draining
        body = {"status": "ok" if ready else ("draining" if self._draining else "no routable worker")}
        return json_response({**body, "workers": workers}, 200 if ready else 503)

    async def live(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def models(self, request: web.Request) -> web.Response:
        return json_response(r.models_json(self.pipeline.model_card(), self._created))

    async def model(self, request: web.Request) -> web.Response:
        try:
            self.pipeline.check_model(request.match_info["model"])
        except RouterError as e:
            return error_response(e)
        return json_response(r.model_json(self.pipeline.model_card(), self._created))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    # --- the generation path ------------------------------------------------------------------------------------
    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        body: Any = None
        try:
            if self._draining:
                raise Unavailable("the router is draining; retry on another replica")
            try:
                body = await request.json()
            except ValueError as e:
                raise InvalidRequest("body", f"not valid JSON: {e}") from None
            parse = http_wire.chat_request if chat else http_wire.completion_request
            req = parse(body, request.headers.get("X-Request-Id"))
            self.pipeline.check_model(req.model)
            if req.echo and req.logprobs:
                raise InvalidRequest(
                    "echo", "echo with logprobs needs prompt logprobs, which this server does not return"
                )
            gen = await self.pipeline.prepare(req.generation)
        except InvalidRequest as e:
            return error_response(e, http_wire.param_of(e, chat, body if isinstance(body, dict) else None))
        except RouterError as e:
            return error_response(e)
        head = r.Head.of("chatcmpl" if chat else "cmpl", gen.request_id, req.model or self.pipeline.model_name)
        decode = self._decoder()
        if not req.generation.stream:
            return await self._unary(gen, head, req, chat, decode)
        return await self._sse(request, gen, head, req, chat, decode)

    def _decoder(self) -> Callable[[int], str]:
        tokenizer, cache = self._tokenizer().tokenizer, {}

        def decode(token_id: int) -> str:
            if token_id not in cache:
                cache[token_id] = tokenizer.decode([token_id], skip_special_tokens=False)
            return cache[token_id]

        return decode

    async def _unary(
        self, gen: Generation, head: r.Head, req: http_wire.HttpRequest, chat: bool, decode: r.Decode
    ) -> web.Response:
        try:
            await self.pipeline.run(gen)
        except RouterError as e:
            return error_response(e, _param(e, chat))
        headers = {"X-Request-Id": gen.request_id}
        if chat:
            return json_response(r.chat_response(head, gen.choices(), gen.usage(), req.logprobs, decode), 200, headers)
        echo = self._prompt_text(gen) if req.echo else None
        body = r.completion_response(head, gen.choices(), gen.usage(), req.logprobs, decode, echo)
        return json_response(body, 200, headers)

    def _prompt_text(self, gen: Generation) -> str:
        prompt = gen.request.prompt
        return prompt.text if prompt.text is not None else self._tokenizer().tokenizer.decode(list(gen.input_ids))

    async def _sse(
        self,
        request: web.Request,
        gen: Generation,
        head: r.Head,
        req: http_wire.HttpRequest,
        chat: bool,
        decode: r.Decode,
    ) -> web.StreamResponse:
        """Admission and the first worker reply happen before the headers, so their errors keep their status."""
        async with contextlib.aclosing(cast(AsyncGenerator[Delta, None], self.pipeline.stream(gen))) as deltas:
            it = deltas.__aiter__()
            try:
                first: Delta | None = await anext(it)
            except StopAsyncIteration:
                first = None
            except RouterError as e:
                return error_response(e, _param(e, chat))
            response = SseResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "X-Request-Id": gen.request_id,
                }
            )
            await response.prepare(request)
            chunk = r.chat_chunk if chat else r.completion_chunk
            usage = req.include_usage
            # the role chunk goes out in one write with the first delta: one send fewer before the first token
            pending = sse(chunk(head, [r.chat_role_choice(i) for i in range(gen.request.n)], usage)) if chat else b""
            make = r.chat_delta_choice if chat else r.completion_delta_choice
            try:
                async for delta in _chain(first, it):
                    if r.is_empty(delta):
                        continue
                    await response.write(pending + sse(chunk(head, [make(delta, req.logprobs, decode)], usage)))
                    pending = b""
                if usage:
                    pending += sse({**chunk(head, [], False), "usage": r.usage_json(gen.usage())})
            except RouterError as e:
                pending += sse(r.http_error(e).body)
            await response.write_eof(pending + b"data: [DONE]\n\n")  # one send with the chunked end marker
            return response


def _param(error: RouterError, chat: bool) -> str | None:
    return http_wire.param_of(error, chat) if isinstance(error, InvalidRequest) else None


async def _chain(first: Delta | None, rest: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    if first is None:
        return
    yield first
    async for delta in rest:
        yield delta
