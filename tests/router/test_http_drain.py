"""SIGTERM drains the HTTP front with the gRPC one (sim stack, real processes): new requests are refused, a stream
in flight runs to its end."""

from __future__ import annotations

import asyncio
import json
import signal

import aiohttp
import pytest

from tests.support.router_stack import http_base_url, sim_stack

pytestmark = [pytest.mark.e2e]


async def test_sigterm_lets_the_stream_in_flight_finish_and_refuses_new_ones(model_dir, tmp_path):
    async with sim_stack(model_dir, tmp_path / "logs", num_workers=1, time_scale=1.0) as stack:
        base = http_base_url(stack)
        body = {"model": "mimo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 300,
                "ignore_eos": True, "stream": True}  # fmt: skip
        async with aiohttp.ClientSession() as s, s.post(f"{base}/chat/completions", json=body) as r:
            assert r.status == 200
            await r.content.readline()
            stack.child("router").process.send_signal(signal.SIGTERM)
            refused = await _until_refused(base)
            lines = [line async for line in r.content if line.startswith(b"data: ")]
        assert refused
        assert lines[-1] == b"data: [DONE]\n"
        finish = [json.loads(x[6:])["choices"][0]["finish_reason"] for x in lines[:-1]]
        assert finish[-1] == "length"


async def _until_refused(base: str, timeout_s: float = 20.0) -> bool:
    """Until a new request is refused: 503 while draining, or the listener already closed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with aiohttp.ClientSession() as s:
        while loop.time() < deadline:
            try:
                async with s.get(base.removesuffix("/v1") + "/health") as r:
                    if r.status == 503:
                        return True
            except aiohttp.ClientConnectionError:
                return True
            await asyncio.sleep(0.05)
    return False
