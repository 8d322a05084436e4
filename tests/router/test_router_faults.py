"""Fault tolerance end to end: a worker killed under load, then restarted (real processes, real gRPC)."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request

import grpc
import pytest
from mimo_client.v1 import common_pb2, inference_pb2

from tests.support.router_stack import inference_stub, sim_stack

pytestmark = pytest.mark.e2e


def metric(port: int, pattern: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(m) for m in re.findall(pattern + r"\S* ([0-9.e+-]+)\n", body))


async def test_killed_worker_requests_are_retried_and_traffic_returns(model_dir, tmp_path):
    async with sim_stack(model_dir, tmp_path, time_scale=0.5) as stack:
        router = stack.child("router")
        victim = stack.child("worker-1")
        async with grpc.aio.insecure_channel(router.spec.target) as channel:
            stub = inference_stub(channel)
            sampling = common_pb2.SamplingParams(max_new_tokens=200, ignore_eos=True)

            async def one(i: int) -> str:
                request = inference_pb2.GenerateRequest(text=f"request {i}", sampling=sampling)
                try:
                    await stub.Generate(request, timeout=30)
                    return "ok"
                except grpc.aio.AioRpcError as e:
                    return e.code().name

            async def user(u: int, until: float) -> list[str]:
                results = []
                while time.monotonic() < until:
                    results.append(await one(u))
                return results

            started = time.monotonic()
            load = [asyncio.create_task(user(u, started + 3.0)) for u in range(16)]
            await asyncio.sleep(1.0)
            victim.process.kill()
            results = [r for rs in await asyncio.wait_for(asyncio.gather(*load), timeout=60) for r in rs]
            assert time.monotonic() - started < 30, "requests hung"
            assert len(results) >= 32 and results.count("ok") == len(results), results
            assert metric(router.spec.metrics_port, "mimo_router_retries_total") >= 1
            assert (
                metric(
                    router.spec.metrics_port,
                    rf'mimo_router_worker_failures_total\{{.*worker="127.0.0.1:{victim.spec.port}"',
                )
                >= 1
            )

            # the supervisor restarts the worker; the router's health loop brings it back into rotation
            for _ in range(100):
                await asyncio.sleep(0.2)
                if (
                    victim.restarts
                    and metric(
                        router.spec.metrics_port, rf'mimo_router_worker_ready\{{worker="127.0.0.1:{victim.spec.port}"'
                    )
                    == 1
                ):
                    break
            else:
                pytest.fail("the restarted worker never became ready in the router")
            await asyncio.gather(*(one(i) for i in range(20)))
            assert metric(victim.spec.metrics_port, "mimo_worker_generated_tokens_total") > 0
