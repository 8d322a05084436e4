"""In-process pieces for rollout-policy tests: a real Pipeline over paced scripted schedulers (real gRPC on
loopback; stand-ins for workers, see fake_scheduler.py) and a scripted mimo.v1.Verifier service (a stand-in for
a reward model behind the Verify interface, over real gRPC)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from mimo_client.v1 import verifier_pb2, verifier_pb2_grpc
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.router.admission import Admission, AdmissionConfig
from services.router.breaker import CircuitBreaker
from services.router.dispatch import Dispatcher
from services.router.pipeline import Pipeline
from services.router.policy import RoundRobin
from services.router.prompts import TokenizerSnapshot
from services.router.worker_client import WorkerClient
from services.router.workers import HealthPolicy, WorkerPool
from services.text.artifacts import load_tokenizer_dir
from services.text.chat import ChatTemplate
from tests.support.fake_scheduler import FakeScheduler


class PacedScheduler(FakeScheduler):
    """Each request takes `delays[first prompt token]` seconds (default `default_s`), then every sample ends with
    `tokens`; a cancelled request counts in `cancelled_first_tokens`."""

    def __init__(self, delays: dict[int, float], default_s: float = 0.02) -> None:
        super().__init__()
        self.delays, self.default_s = delays, default_s
        self.started: list[int] = []
        self.cancelled_first_tokens: list[int] = []

    async def Generate(self, request: pb.GenerateRequest, context) -> AsyncIterator[pb.GenerateResponse]:
        first = request.tokenized.input_ids[0]
        self.started.append(first)
        try:
            await asyncio.sleep(self.delays.get(first, self.default_s))
        except asyncio.CancelledError:
            self.cancelled_first_tokens.append(first)
            raise
        for index in range(max(1, request.sampling_params.n)):
            done = pb.GenerateComplete(output_ids=list(self.script.tokens), finish_reason="stop", index=index)
            yield pb.GenerateResponse(request_id=request.request_id, complete=done)


@asynccontextmanager
async def paced_pipeline(model_dir: Path, delays: dict[int, float]) -> AsyncIterator[tuple[Pipeline, PacedScheduler]]:
    fake = PacedScheduler(delays)
    server = grpc.aio.server()
    pb_grpc.add_SglangSchedulerServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    pool = WorkerPool(HealthPolicy(interval_s=0.1), CircuitBreaker(), WorkerClient)
    await pool.add(f"127.0.0.1:{port}")
    pool.start()
    loaded = load_tokenizer_dir(model_dir)
    snapshot = TokenizerSnapshot(loaded, ChatTemplate(loaded.chat_template, loaded.template_tokens))
    pipeline = Pipeline(
        Dispatcher(pool, RoundRobin(), 3, max_wait_s=10),
        Admission(AdmissionConfig(1024, 1024, 30)),
        lambda: snapshot,
        "m",
    )
    try:
        yield pipeline, fake
    finally:
        await pool.stop()
        await server.stop(0)


@dataclass
class ScriptedVerifier(verifier_pb2_grpc.VerifierServicer):
    """Verdicts by task id "prompt_id/sample": `correct[prompt_id]` lists the correct sample indexes."""

    correct: dict[str, set[int]]
    seen: list[verifier_pb2.VerifyTask] = field(default_factory=list)

    async def Verify(self, request: verifier_pb2.VerifyRequest, context) -> verifier_pb2.VerifyResponse:
        self.seen.extend(request.tasks)
        results = []
        for i, t in enumerate(request.tasks):
            prompt_id, _, sample = t.task_id.rpartition("/")
            ok = int(sample) in self.correct.get(prompt_id, set())
            verdict = verifier_pb2.VERDICT_CORRECT if ok else verifier_pb2.VERDICT_INCORRECT
            results.append(
                verifier_pb2.VerifyResult(
                    index=i, task_id=t.task_id, reward=float(ok), verdict=verdict, reason="scripted"
                )
            )
        return verifier_pb2.VerifyResponse(results=results)


@asynccontextmanager
async def scripted_verifier(correct: dict[str, set[int]]) -> AsyncIterator[tuple[str, ScriptedVerifier]]:
    servicer = ScriptedVerifier(correct)
    server = grpc.aio.server()
    verifier_pb2_grpc.add_VerifierServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        await server.stop(0)
