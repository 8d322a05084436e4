"""The three ways the router bench reaches a sim worker, from one client process:
directly (SGLang scheduler gRPC), through our router (mimo.v1.Inference gRPC) and through SMG (HTTP `/generate`
with `input_ids`, SGLang's native generate API). Each gives time to first token (streaming) and a unary call."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import grpc
from mimo_client.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

GRPC_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


@dataclass(frozen=True, slots=True)
class Reply:
    """One finished request: output and cached prompt tokens as the server reported them."""

    output_tokens: int
    prompt_tokens: int
    cached_tokens: int


class Client(Protocol):
    name: str
    transport: str

    async def ttft(self, ids: list[int], max_new: int, timeout_s: float = 60.0) -> float: ...

    async def call(self, ids: list[int], max_new: int, timeout_s: float = 600.0) -> Reply: ...

    async def close(self) -> None: ...


_ids = itertools.count()
_prefix = uuid.uuid4().hex[:8]


def _request_id() -> str:
    return f"bench-{_prefix}-{next(_ids)}"


class DirectClient:
    """The floor: SglangScheduler.Generate straight to one worker, token ids in and out."""

    transport = "gRPC SglangScheduler.Generate"

    def __init__(self, target: str, name: str = "direct") -> None:
        self.name = name
        self._channel = grpc.aio.insecure_channel(target, options=GRPC_OPTIONS)
        self._stub = pb_grpc.SglangSchedulerStub(self._channel)

    def _request(self, ids: list[int], max_new: int, stream: bool) -> pb.GenerateRequest:
        params = pb.SamplingParams(
            temperature=0, top_p=1, top_k=-1, repetition_penalty=1, n=1, max_new_tokens=max_new, ignore_eos=True
        )
        return pb.GenerateRequest(
            request_id=_request_id(), tokenized=pb.TokenizedInput(input_ids=ids), sampling_params=params, stream=stream
        )

    async def ttft(self, ids: list[int], max_new: int, timeout_s: float = 60.0) -> float:
        t0, first = time.perf_counter(), 0.0
        async for msg in self._stub.Generate(self._request(ids, max_new, True), timeout=timeout_s):
            if not first and msg.HasField("chunk") and msg.chunk.token_ids:
                first = time.perf_counter() - t0
        return first

    async def call(self, ids: list[int], max_new: int, timeout_s: float = 600.0) -> Reply:
        out = Reply(0, len(ids), 0)
        async for msg in self._stub.Generate(self._request(ids, max_new, False), timeout=timeout_s):
            if msg.HasField("complete"):
                out = Reply(len(msg.complete.output_ids), len(ids), msg.complete.cached_tokens)
        return out

    async def close(self) -> None:
        await self._channel.close()


class OursClient:
    """Our router: mimo.v1.Inference GenerateStream / Generate with `token_ids` input."""

    transport = "gRPC mimo.v1.Inference.GenerateStream (token_ids)"

    def __init__(self, target: str, name: str = "ours") -> None:
        self.name = name
        self._channel = grpc.aio.insecure_channel(target, options=GRPC_OPTIONS)
        self._stub = inference_pb2_grpc.InferenceStub(self._channel)

    @staticmethod
    def _request(ids: list[int], max_new: int) -> inference_pb2.GenerateRequest:
        sampling = common_pb2.SamplingParams(temperature=0, max_new_tokens=max_new, ignore_eos=True)
        return inference_pb2.GenerateRequest(token_ids=common_pb2.TokenIds(ids=ids), sampling=sampling)

    async def ttft(self, ids: list[int], max_new: int, timeout_s: float = 60.0) -> float:
        t0, first = time.perf_counter(), 0.0
        async for msg in self._stub.GenerateStream(self._request(ids, max_new), timeout=timeout_s):
            if not first and msg.delta.token_ids:
                first = time.perf_counter() - t0
        return first

    async def call(self, ids: list[int], max_new: int, timeout_s: float = 600.0) -> Reply:
        reply = await self._stub.Generate(self._request(ids, max_new), timeout=timeout_s)
        u = reply.usage
        return Reply(u.completion_tokens, u.prompt_tokens, u.cached_tokens)

    async def close(self) -> None:
        await self._channel.close()


class SmgClient:
    """SMG over HTTP: POST /generate {"input_ids", "sampling_params", "stream"}; SSE `data:` lines when streaming."""

    transport = "HTTP/1.1 POST /generate (input_ids, SSE)"

    def __init__(self, base_url: str, model: str, name: str = "smg", connections: int = 256) -> None:
        self.name = name
        self._url = base_url + "/generate"
        self._model = model
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, force_close=False),
            timeout=aiohttp.ClientTimeout(total=None),
        )

    @staticmethod
    async def model_name(base_url: str) -> str:
        async with aiohttp.ClientSession() as session, session.get(base_url + "/v1/models") as r:
            return str((await r.json())["data"][0]["id"])

    def _body(self, ids: list[int], max_new: int, stream: bool) -> dict[str, object]:
        return {
            "model": self._model,
            "input_ids": ids,
            "sampling_params": {"temperature": 0, "max_new_tokens": max_new, "ignore_eos": True},
            "stream": stream,
        }

    async def ttft(self, ids: list[int], max_new: int, timeout_s: float = 60.0) -> float:
        t0, first = time.perf_counter(), 0.0
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with self._session.post(self._url, json=self._body(ids, max_new, True), timeout=timeout) as r:
            if r.status != 200:
                raise RuntimeError(f"smg /generate: HTTP {r.status}: {(await r.text())[:300]}")
            async for line in r.content:
                if not first and line.startswith(b"data: {") and b'"output_ids":[]' not in line:
                    first = time.perf_counter() - t0
        return first

    async def call(self, ids: list[int], max_new: int, timeout_s: float = 600.0) -> Reply:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with self._session.post(self._url, json=self._body(ids, max_new, False), timeout=timeout) as r:
            text = await r.text()
            if r.status != 200:
                raise RuntimeError(f"smg /generate: HTTP {r.status}: {text[:300]}")
        body = json.loads(text)
        meta = (body[0] if isinstance(body, list) else body)["meta_info"]
        return Reply(int(meta["completion_tokens"]), int(meta["prompt_tokens"]), int(meta.get("cached_tokens", 0)))

    async def close(self) -> None:
        await self._session.close()


class _Passthrough(pb_grpc.SglangSchedulerServicer):
    """Forwards Generate to one worker and does nothing else: the floor of a Python grpc.aio hop."""

    def __init__(self, target: str) -> None:
        self._stub = pb_grpc.SglangSchedulerStub(grpc.aio.insecure_channel(target, options=GRPC_OPTIONS))

    async def Generate(self, request, context):
        async for response in self._stub.Generate(request):
            yield response


def passthrough_main() -> None:
    """`python -m bench.clients WORKER LISTEN`: serve the pass-through (with gRPC health)."""
    import asyncio
    import sys

    from grpc_health.v1 import health, health_pb2_grpc

    async def serve() -> None:
        server = grpc.aio.server(options=GRPC_OPTIONS)
        pb_grpc.add_SglangSchedulerServicer_to_server(_Passthrough(sys.argv[1]), server)
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        server.add_insecure_port(sys.argv[2])
        await server.start()
        await server.wait_for_termination()

    asyncio.run(serve())


if __name__ == "__main__":
    passthrough_main()
