"""An in-process SGLang scheduler whose behaviour a test scripts, served over real gRPC on loopback.

It is a stand-in for a worker (not a model): it answers the calls the router makes (HealthCheck, GetLoads,
GetModelInfo, Generate, Abort) and records what it was sent, so router tests can check dispatch rules
(retry before the first token, mid-stream failures, aborts, deadlines) without starting processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc


@dataclass
class Script:
    """What the fake does; tests change fields while it runs."""

    tokens: tuple[int, ...] = (11, 12, 13, 14)  # the output of every sample
    fail_before_first: grpc.StatusCode | None = None  # refuse Generate with this code
    fail_after_chunks: int | None = None  # streamed: fail (UNAVAILABLE) after this many chunks
    token_delay_s: float = 0.0  # between chunks
    healthy: bool = True
    weight_version: str = "v0"
    max_context_length: int = 4096
    finish_reason: str = "stop"


@dataclass
class Seen:
    """What the fake received."""

    requests: list[pb.GenerateRequest] = field(default_factory=list)
    time_remaining_s: list[float | None] = field(default_factory=list)
    aborts: list[str] = field(default_factory=list)
    cancelled: int = 0


class FakeScheduler(pb_grpc.SglangSchedulerServicer):
    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.seen = Seen()

    async def HealthCheck(self, request, context):
        return pb.HealthCheckResponse(healthy=self.script.healthy, message="" if self.script.healthy else "scripted")

    async def GetLoads(self, request, context):
        return pb.GetLoadsResponse(loads=[pb.SchedulerLoad(max_running_requests=64)])

    async def GetModelInfo(self, request, context):
        return pb.GetModelInfoResponse(
            model_path="fake",
            max_context_length=self.script.max_context_length,
            weight_version=self.script.weight_version,
        )

    async def Abort(self, request, context):
        self.seen.aborts.append(request.request_id)
        return pb.AbortResponse(success=True)

    async def Generate(self, request: pb.GenerateRequest, context) -> AsyncIterator[pb.GenerateResponse]:
        s = self.script
        self.seen.requests.append(request)
        self.seen.time_remaining_s.append(context.time_remaining())
        if s.fail_before_first is not None:
            await context.abort(s.fail_before_first, "scripted failure before the first response")
        n = max(1, request.sampling_params.n)
        try:
            for index in range(n):
                if request.stream:
                    for i, token in enumerate(s.tokens):
                        if s.fail_after_chunks is not None and i >= s.fail_after_chunks:
                            await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted failure mid-stream")
                        if s.token_delay_s:
                            await asyncio.sleep(s.token_delay_s)
                        chunk = pb.GenerateStreamChunk(token_ids=[token], index=index)
                        yield pb.GenerateResponse(request_id=request.request_id, chunk=chunk)
                elif s.token_delay_s:
                    await asyncio.sleep(s.token_delay_s * len(s.tokens))
                done = pb.GenerateComplete(output_ids=list(s.tokens), finish_reason=s.finish_reason, index=index)
                yield pb.GenerateResponse(request_id=request.request_id, complete=done)
        except asyncio.CancelledError:
            self.seen.cancelled += 1
            raise


@asynccontextmanager
async def fake_workers(*scripts: Script) -> AsyncIterator[list[tuple[str, FakeScheduler]]]:
    """One gRPC server per script on a free loopback port; yields (target, fake) pairs."""
    servers, out = [], []
    for script in scripts:
        fake = FakeScheduler(script)
        server = grpc.aio.server()
        pb_grpc.add_SglangSchedulerServicer_to_server(fake, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        out.append((f"127.0.0.1:{port}", fake))
    try:
        yield out
    finally:
        for server in servers:
            await server.stop(0)
