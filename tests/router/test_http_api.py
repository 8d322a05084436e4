"""The router's OpenAI HTTP API over loopback (tokenizer service + sim workers + router, real processes), driven by
the real `openai` SDK, sync and async: chat and completions, streamed and not, n > 1, usage, health, disconnects."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import aiohttp
import openai
import pytest
import pytest_asyncio

from tests.support.router_stack import http_base_url, sim_stack, worker_load

pytestmark = [pytest.mark.e2e]
asyncio_module = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(model_dir, tmp_path_factory):
    async with sim_stack(model_dir, tmp_path_factory.mktemp("logs"), time_scale=0.2) as s:
        yield s


@pytest.fixture(scope="module")
def base_url(stack) -> str:
    return http_base_url(stack)


@pytest_asyncio.fixture(loop_scope="module")
async def client(base_url):
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60) as c:
        yield c


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def router_metric(stack, name: str) -> str:
    port = stack.child("router").spec.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


def test_sync_client_chat_with_n_samples_and_usage(base_url):
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60) as c:
        reply = c.chat.completions.create(
            model="mimo", messages=user("hi"), n=3, max_tokens=6, extra_body={"ignore_eos": True}
        )
    assert [ch.index for ch in reply.choices] == [0, 1, 2]
    assert all(ch.finish_reason == "length" and ch.message.role == "assistant" for ch in reply.choices)
    usage = reply.usage
    assert usage.completion_tokens == 18 and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.completion_tokens_details.reasoning_tokens is not None
    assert usage.prompt_tokens_details.cached_tokens is not None
    assert reply.object == "chat.completion" and reply.model == "mimo"


@asyncio_module
async def test_async_stream_with_usage_matches_the_unary_answer_for_a_seed(client):
    whole = await client.chat.completions.create(model="mimo", messages=user("hi"), max_tokens=12, seed=5)
    stream = await client.chat.completions.create(
        model="mimo", messages=user("hi"), max_tokens=12, seed=5, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)
    reasoning = "".join((getattr(c.choices[0].delta, "reasoning_content", None) or "") for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    message = whole.choices[0].message
    assert text == (message.content or "") and reasoning == (message.reasoning_content or "")
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


@asyncio_module
async def test_completions_text_and_token_id_prompts_stream_and_stop(client):
    reply = await client.completions.create(model="mimo", prompt="What is 2 + 3?", max_tokens=5, n=2, echo=True)
    assert len(reply.choices) == 2 and all(c.text.startswith("What is 2 + 3?") for c in reply.choices)
    by_ids = await client.completions.create(model="mimo", prompt=[12, 13, 14], max_tokens=4)
    assert by_ids.usage.prompt_tokens == 3 and by_ids.usage.completion_tokens == 4
    stream = await client.completions.create(model="mimo", prompt="hello", max_tokens=8, stream=True, seed=2)
    streamed = "".join([c.choices[0].text async for c in stream if c.choices])
    unary = await client.completions.create(model="mimo", prompt="hello", max_tokens=8, seed=2)
    assert streamed == unary.choices[0].text


@asyncio_module
async def test_models_and_health(client, base_url, stack):
    models = await client.models.list()
    assert [m.id for m in models.data] == ["mimo"]
    one = await client.models.retrieve("mimo")
    assert one.id == "mimo"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-4")
    root = base_url.removesuffix("/v1")
    async with aiohttp.ClientSession() as s, s.get(f"{root}/health") as r:
        assert r.status == 200 and (await r.json())["workers"] == 2


@asyncio_module
async def test_a_client_that_disconnects_mid_stream_aborts_the_worker_request(base_url, stack):
    body = {"model": "mimo", "messages": user("hi"), "max_tokens": 1500, "stream": True, "ignore_eos": True}
    before = _worker_tokens(stack)
    async with aiohttp.ClientSession() as s, s.post(f"{base_url}/chat/completions", json=body) as r:
        assert r.status == 200
        async for line in r.content:
            if line.startswith(b"data: ") and b'"content"' in line and b'"role"' not in line:
                break  # one token in: hang up
    assert await _until_idle(stack) == 0
    generated = _worker_tokens(stack) - before
    assert 0 < generated < 1000, generated  # the worker stopped long before the 1500 tokens it was asked for


def _worker_tokens(stack) -> float:
    total = 0.0
    for child in stack.children:
        if child.spec.name.startswith("worker"):
            url = f"http://127.0.0.1:{child.spec.metrics_port}/metrics"
            for line in urllib.request.urlopen(url, timeout=10).read().decode().splitlines():
                if line.startswith("mimo_worker_generated_tokens_total"):
                    total += float(line.split()[-1])
    return total


async def _until_idle(stack, timeout_s: float = 30.0) -> int:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        running = 0
        for child in stack.children:
            if child.spec.name.startswith("worker"):
                load = await worker_load(child.spec.target)
                running += load.num_running_reqs + load.num_waiting_reqs
        if running == 0 or asyncio.get_running_loop().time() > deadline:
            return running
        await asyncio.sleep(0.1)


@asyncio_module
async def test_requests_are_counted_by_route_and_status(client, stack):
    await client.chat.completions.create(model="mimo", messages=user("hi"), max_tokens=2)
    lines = router_metric(stack, "mimo_router_http_requests_total")
    assert 'route="/v1/chat/completions",status="200"' in lines
    ttft = router_metric(stack, "mimo_router_time_to_first_token_seconds_count")
    assert 'method="http.chat.stream"' in ttft  # the streamed calls above


@asyncio_module
async def test_structured_output_passes_through_to_a_sim_worker_that_ignores_it(client):
    reply = await client.chat.completions.create(
        model="mimo", messages=user("hi"), max_tokens=4, response_format={"type": "json_object"}
    )
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert json.dumps(reply.model_dump())  # an answer, unconstrained: the sim engine says it ignores constraints
