"""The open-loop driver: sends each request at its arrival time whatever the server's pace, over a transport.

A transport turns a RequestSpec into a stream of token counts; `GrpcTransport` uses the SDK's stubs
(mimo.v1.Inference GenerateStream / ChatStream), `HttpTransport` the router's OpenAI API with SSE.
Plain asyncio (no locust, no gevent), so a slow server never slows the arrivals (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import aiohttp
import grpc
from mimo_client.v1 import common_pb2, inference_pb2, inference_pb2_grpc

from loadtest.goodput import Outcome
from loadtest.mixes import RequestSpec


class Transport(Protocol):
    """How requests reach the server: yields (new tokens, whether a message carrying them arrived now) for each
    message with tokens; (n, False) corrects the count at the end (HTTP's usage chunk) without timing a gap."""

    def stream(self, spec: RequestSpec, timeout_s: float) -> AsyncIterator[tuple[int, bool]]: ...

    async def max_context_tokens(self) -> int: ...

    async def close(self) -> None: ...


class GrpcTransport:
    def __init__(self, target: str) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = inference_pb2_grpc.InferenceStub(self._channel)

    async def max_context_tokens(self) -> int:
        models = await self._stub.ListModels(inference_pb2.ListModelsRequest(), timeout=10)
        return int(models.models[0].max_context_tokens)

    async def stream(self, spec: RequestSpec, timeout_s: float) -> AsyncIterator[tuple[int, bool]]:
        sampling = common_pb2.SamplingParams(max_new_tokens=spec.output_tokens, ignore_eos=True)
        if spec.messages:
            messages = [common_pb2.ChatMessage(role=r, content=c) for r, c in spec.messages]
            call = self._stub.ChatStream(
                inference_pb2.ChatRequest(messages=messages, sampling=sampling, n=spec.num_samples), timeout=timeout_s
            )
        else:
            ids = common_pb2.TokenIds(ids=spec.prompt_ids)
            call = self._stub.GenerateStream(
                inference_pb2.GenerateRequest(token_ids=ids, sampling=sampling, n=spec.num_samples), timeout=timeout_s
            )
        async for message in call:
            if message.delta.token_ids:
                yield len(message.delta.token_ids), True

    async def close(self) -> None:
        await self._channel.close()


class HttpTransport:
    """POST /v1/completions (token-id prompts) or /v1/chat/completions (messages) with stream=true: each SSE chunk
    with text is a message; the final usage chunk gives the exact token count (a chunk may carry several)."""

    def __init__(self, base_url: str) -> None:
        self._base = base_url.rstrip("/")
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def max_context_tokens(self) -> int:
        async with self._session.get(f"{self._base}/v1/models") as response:
            body = await response.json()
        card = body["data"][0]
        return int(card.get("max_model_len") or card.get("context_length") or card.get("max_context_tokens") or 2048)

    async def stream(self, spec: RequestSpec, timeout_s: float) -> AsyncIterator[tuple[int, bool]]:
        body: dict[str, object] = {"max_tokens": spec.output_tokens, "ignore_eos": True, "stream": True}
        body["stream_options"] = {"include_usage": True}
        body["n"] = spec.num_samples
        if spec.messages:
            path, body["messages"] = "/v1/chat/completions", [{"role": r, "content": c} for r, c in spec.messages]
        else:
            path, body["prompt"] = "/v1/completions", list(spec.prompt_ids)
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with self._session.post(f"{self._base}{path}", json=body, timeout=timeout) as response:
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {(await response.text())[:160]}")
            num_chunks = 0
            async for line in response.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    raise RuntimeError(f"stream error: {event['error'].get('message', '')[:160]}")
                choices = event.get("choices") or []
                if any((c.get("text") or (c.get("delta") or {}).get("content")) for c in choices):
                    num_chunks += 1
                    yield 1, True
                usage = event.get("usage") or {}
                if usage.get("completion_tokens", 0) > num_chunks:
                    yield usage["completion_tokens"] - num_chunks, False

    async def close(self) -> None:
        await self._session.close()


def transport_for(target: str) -> Transport:
    """http(s)://HOST:PORT: the OpenAI HTTP API; HOST:PORT: gRPC."""
    return HttpTransport(target) if target.startswith(("http://", "https://")) else GrpcTransport(target)


async def _one(transport: Transport, spec: RequestSpec, due_s: float, start: float, timeout_s: float) -> Outcome:
    await asyncio.sleep(max(0.0, start + due_s - time.perf_counter()))
    sent = start + due_s  # latency from the due time: a late send (client lag) counts against the server's figures
    first = last = 0.0
    gaps: list[float] = []
    num_tokens = 0
    try:
        async for count, is_message in transport.stream(spec, timeout_s):
            if not is_message:
                num_tokens += count
                continue
            now = time.perf_counter()
            if num_tokens:
                gaps.append(now - last)
            else:
                first = now
            num_tokens += count
            last = now
    except (grpc.aio.AioRpcError, aiohttp.ClientError, RuntimeError, TimeoutError) as e:
        text = f"{e.code().name}: {e.details()}" if isinstance(e, grpc.aio.AioRpcError) else str(e) or type(e).__name__
        return Outcome(due_s, None, None, error=text[:200])
    if num_tokens == 0:
        return Outcome(due_s, None, None, error="no tokens")
    return Outcome(due_s, first - sent, last - sent, tuple(gaps), num_tokens)


async def run_open_loop(
    transport: Transport, specs: Sequence[RequestSpec], due_s: Sequence[float], timeout_s: float
) -> list[Outcome]:
    """Sends specs[i % len(specs)] at due_s[i]; returns every outcome (errors included) in send order."""
    start = time.perf_counter() + 0.05
    tasks = [
        asyncio.create_task(_one(transport, specs[i % len(specs)], t, start, timeout_s)) for i, t in enumerate(due_s)
    ]
    return list(await asyncio.gather(*tasks))
