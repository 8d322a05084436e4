"""Readiness that tells the truth: a real router process (with a real tokenizer service) over a scripted scheduler
(tests/support/fake_scheduler, standing in for a worker so the test decides when it is healthy).

The router's default health service is SERVING only while a worker is routable; the "liveness" service is SERVING
from start to drain; a request sent before any worker is ready waits for one."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mimo_client.v1 import inference_pb2, inference_pb2_grpc
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.common.net import free_port
from services.router.breaker import CircuitBreaker
from services.router.worker_client import WorkerClient
from services.router.workers import HealthPolicy, WorkerPool
from services.stack import Stack, random_ports_plan
from tests.support.fake_scheduler import FakeScheduler, Script

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
pytestmark = pytest.mark.slow


async def start_fake(fake: FakeScheduler, port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    pb_grpc.add_SglangSchedulerServicer_to_server(fake, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


async def status(target: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        except grpc.aio.AioRpcError:
            return -1
        return reply.status


async def until(target: str, wanted: int, timeout_s: float = 60.0, service: str = "") -> None:
    async def poll() -> None:
        while await status(target, service) != wanted:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout_s)


@pytest.fixture
async def tokenizer(tiny_model: Path, tmp_path: Path):
    plan = random_ports_plan(tiny_model)
    stack = Stack([s for s in plan.specs() if s.name == "tokenizer"], tmp_path)
    await stack.start()
    yield stack.child("tokenizer").spec.target
    await stack.stop()


@pytest.fixture
async def router_on(tokenizer: str, tmp_path: Path):
    """Starts a router process over the given worker port; yields its target."""
    processes = []

    async def start(worker_port: int, *extra: str) -> str:
        port = free_port()
        log = open(tmp_path / f"router-{port}.log", "wb")  # noqa: SIM115 (closed with the process)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "router", "--listen", f"127.0.0.1:{port}", "--metrics-port", "0",
            "--workers", f"grpc://127.0.0.1:{worker_port}", "--tokenizer", tokenizer, "--health-interval-s", "0.2",
            "--no-http", *extra, stdout=log, stderr=log,
        )  # fmt: skip
        processes.append(process)
        target = f"127.0.0.1:{port}"
        await until(target, SERVING, service="liveness")
        return target

    yield start
    for process in processes:
        process.terminate()
        await process.wait()


async def test_not_serving_until_a_worker_passes_a_probe_then_follows_the_last_worker(router_on):
    fake, port = FakeScheduler(Script(healthy=False)), free_port()
    server = await start_fake(fake, port)
    router = await router_on(port)
    await asyncio.sleep(0.6)  # three probe intervals: still no routable worker
    assert await status(router) == NOT_SERVING
    assert await status(router, "liveness") == SERVING
    fake.script.healthy = True
    await until(router, SERVING)
    await server.stop(0)  # the last worker goes away
    await until(router, NOT_SERVING)
    server = await start_fake(fake, port)  # and comes back
    await until(router, SERVING)
    await server.stop(0)


async def test_a_request_sent_at_start_up_waits_for_the_first_worker(router_on):
    fake, port = FakeScheduler(Script(healthy=False)), free_port()
    server = await start_fake(fake, port)
    router = await router_on(port)
    async with grpc.aio.insecure_channel(router) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        call = asyncio.ensure_future(stub.Generate(inference_pb2.GenerateRequest(text="hi"), timeout=60))
        await asyncio.sleep(0.5)
        assert not call.done()
        fake.script.healthy = True
        reply = await call
    assert list(reply.choices[0].token_ids) == list(fake.script.tokens)
    await server.stop(0)


async def test_with_no_worker_a_request_ends_unavailable_after_its_bounded_wait(router_on):
    router = await router_on(free_port(), "--queue-timeout-s", "1")
    async with grpc.aio.insecure_channel(router) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.Generate(inference_pb2.GenerateRequest(text="hi"), timeout=30)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no worker became ready within 1." in e.value.details() and "not_ready" in e.value.details()


async def test_list_models_counts_routable_workers_not_known_ones(router_on):
    """Two workers known from start-up, one failing its health check: ListModels says 1, then 2 once it passes."""
    ok, sick = FakeScheduler(), FakeScheduler(Script(healthy=False))
    ok_port, sick_port = free_port(), free_port()
    servers = [await start_fake(ok, ok_port), await start_fake(sick, sick_port)]
    workers = f"grpc://127.0.0.1:{ok_port},grpc://127.0.0.1:{sick_port}"
    router = await router_on(ok_port, "--workers", workers)  # the later --workers wins
    await until(router, SERVING)

    async def num_workers() -> int:
        async with grpc.aio.insecure_channel(router) as channel:
            reply = await inference_pb2_grpc.InferenceStub(channel).ListModels(
                inference_pb2.ListModelsRequest(), timeout=5
            )
        return reply.models[0].num_workers

    await asyncio.sleep(0.6)  # three probe intervals: the sick worker is known and still not routable
    assert await num_workers() == 1
    sick.script.healthy = True

    async def two() -> None:
        while await num_workers() != 2:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(two(), 30)
    for server in servers:
        await server.stop(0)


async def test_a_worker_added_after_start_is_probed_at_once_not_on_the_next_interval():
    """WorkerPool in process over a real scheduler on loopback: with a 60 s probe interval, a worker added after
    the pool's first round is routable as soon as add() returns."""
    fake, port = FakeScheduler(), free_port()
    server = await start_fake(fake, port)
    pool = WorkerPool(HealthPolicy(interval_s=60), CircuitBreaker(), WorkerClient)
    pool.start()
    try:
        await asyncio.sleep(0.2)  # the first round (of no workers) is over; the next is a minute away
        await asyncio.wait_for(pool.add(f"127.0.0.1:{port}"), 10)
        assert [w.url for w in pool.routable()] == [f"127.0.0.1:{port}"]
        assert await pool.wait_routable(0)
    finally:
        await pool.stop()
        await server.stop(0)
