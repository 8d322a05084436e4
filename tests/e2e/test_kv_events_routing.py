"""Two router replicas share one truth of the workers' caches (`--kv-events`): real sim workers publish KV events
(SubscribeKvEvents), and a prompt first sent through router A is routed by router B — which never saw it — to the
worker that cached it, so B's request hits that cache (usage.cached_tokens)."""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.request

import pytest
from mimo_client import AsyncMimoClient

from services.common.net import free_port
from services.stack import Stack, random_ports_plan
from tests.support.router_stack import SIM_PROFILE

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROMPTS = [[1 + (7 * i + j) % 500 for j in range(256)] for i in range(8)]


def second_router(spec, port: int, metrics_port: int):
    args = list(spec.args)
    args[args.index("--listen") + 1] = f"127.0.0.1:{port}"
    args[args.index("--metrics-port") + 1] = str(metrics_port)
    args[args.index("--http-listen") + 1] = ""
    return dataclasses.replace(spec, name="router-b", args=tuple(args), port=port, metrics_port=metrics_port)


async def cached_tokens(client: AsyncMimoClient, prompt: list[int]) -> int:
    reply = await client.generate(prompt, max_new_tokens=2, temperature=0.0)
    return reply.usage.cached_tokens


async def blocks_seen(metrics_port: int) -> dict[str, float]:
    """Router B's mimo_router_kv_event_blocks per worker (its view of the workers' caches)."""
    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    )
    return {
        line.split('worker="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith("mimo_router_kv_event_blocks{")
    }


async def test_a_second_router_routes_to_the_worker_that_cached_the_prompt(tiny_model, tmp_path):
    plan = random_ports_plan(
        tiny_model,
        engine="sim",
        num_workers=2,
        worker_args=("--profile", str(SIM_PROFILE), "--time-scale", "0"),
        router_args=("--health-interval-s", "0.3", "--kv-events"),
    )
    specs = [s for s in plan.specs() if s.name != "verifier"]
    router_b = second_router(specs[-1], free_port(), free_port())
    args = list(specs[-1].args)
    args[args.index("--policy") + 1] = "round_robin"  # router A spreads the prompts over both workers
    router_a = specs[-1] = dataclasses.replace(specs[-1], args=tuple(args))
    stack = Stack([*specs, router_b], tmp_path / "logs")
    await stack.start()
    try:
        a = AsyncMimoClient(router_a.target, timeout_s=30)
        b = AsyncMimoClient(router_b.target, timeout_s=30)
        async with a, b:
            for client in (a, b):  # both see both workers
                while (await client.list_models())[0].num_workers < 2:
                    await asyncio.sleep(0.05)
            for prompt in PROMPTS:
                assert await cached_tokens(a, prompt) == 0  # cold everywhere
            page = 16  # the tiny-cpu profile's page size: 256 tokens are 16 blocks
            deadline = asyncio.get_running_loop().time() + 30
            while True:  # until router B has heard of every block both workers stored
                seen = await blocks_seen(router_b.metrics_port)
                if len(seen) == 2 and min(seen.values()) >= 4 * 256 // page:
                    break
                assert asyncio.get_running_loop().time() < deadline, seen
                await asyncio.sleep(0.05)
            hits = [await cached_tokens(b, prompt) for prompt in PROMPTS]
        # every prompt went where it was cached; a router guessing from its own (empty) history sends half of
        # them to the wrong worker
        assert all(h >= 256 - page for h in hits), hits
    finally:
        await stack.stop()
