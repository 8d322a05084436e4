"""The OpenAI HTTP API's errors over loopback (sim stack; the router takes a bearer token and one request at a time):
each comes in OpenAI's shape with its status, the openai SDK raises the matching exception, health stays green."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest
import pytest_asyncio

from tests.support.router_stack import http_base_url, sim_stack

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]
TOKEN = "s3cret"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(model_dir, tmp_path_factory):
    args = ("--auth-token", TOKEN, "--max-in-flight", "1", "--max-queue", "0")
    async with sim_stack(
        model_dir, tmp_path_factory.mktemp("logs"), num_workers=1, time_scale=0.5, router_args=args
    ) as s:
        yield s


@pytest.fixture(scope="module")
def base_url(stack) -> str:
    return http_base_url(stack)


@pytest_asyncio.fixture(loop_scope="module")
async def session():
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as s:
        yield s


async def post(session, url: str, body) -> tuple[int, dict, dict]:
    data = body if isinstance(body, bytes) else None
    async with session.post(url, json=None if data else body, data=data) as r:
        return r.status, await r.json(), dict(r.headers)


def assert_openai_error(body: dict, param: str | None = None) -> None:
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    if param is not None:
        assert body["error"]["param"] == param


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("chat/completions", {"messages": [{"role": "user", "content": "hi"}], "temperature": -1}, "temperature"),
        ("chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}, "max_tokens"),
        ("chat/completions", {"messages": []}, "messages"),
        ("chat/completions", b"{not json", "body"),
        ("completions", {"prompt": [10**7]}, "prompt"),
        ("completions", {"prompt": "x", "n": 100}, "n"),
        ("completions", {"prompt": "x", "logprobs": 2, "echo": True}, "echo"),
    ],
)
async def test_bad_values_are_400_naming_the_parameter(session, base_url, path, body, param):
    status, reply, _ = await post(session, f"{base_url}/{path}", body)
    assert status == 400, reply
    assert_openai_error(reply, param)
    assert reply["error"]["type"] == "invalid_request_error"


async def test_without_the_token_401_and_the_sdk_raises_authentication_error(base_url):
    async with openai.AsyncOpenAI(base_url=base_url, api_key="wrong", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError) as e:
            await c.models.list()
    assert e.value.status_code == 401
    async with aiohttp.ClientSession() as s:
        status, body, _ = await post(s, f"{base_url}/chat/completions", {"messages": []})
    assert status == 401
    assert_openai_error(body)


async def test_unknown_model_is_404(base_url):
    async with openai.AsyncOpenAI(base_url=base_url, api_key=TOKEN, max_retries=0) as c:
        with pytest.raises(openai.NotFoundError) as e:
            await c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["param"] == "model" and e.value.body["code"] == "model_not_found"


async def test_unknown_route_and_method_keep_the_error_shape(session, base_url):
    async with session.get(f"{base_url}/embeddings") as r:
        assert r.status == 404
        assert_openai_error(await r.json())
    async with session.get(f"{base_url}/chat/completions") as r:
        assert r.status == 405
        assert_openai_error(await r.json())


async def test_a_full_router_answers_429_with_retry_after(session, base_url):
    long = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 400, "ignore_eos": True, "stream": True}
    async with session.post(f"{base_url}/chat/completions", json=long) as busy:
        assert busy.status == 200
        await busy.content.readline()  # the one slot is taken while this stream runs
        status, body, headers = await post(session, f"{base_url}/chat/completions", {**long, "stream": False})
        assert status == 429, body
        assert_openai_error(body)
        assert int(headers["Retry-After"]) >= 1
        async with openai.AsyncOpenAI(base_url=base_url, api_key=TOKEN, max_retries=0) as c:
            with pytest.raises(openai.RateLimitError):
                await c.chat.completions.create(model="mimo", messages=long["messages"], stream=True)


async def test_health_stays_green_and_needs_no_token(base_url):
    root = base_url.removesuffix("/v1")
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.get(f"{root}/health") as r:
                assert r.status == 200, await r.text()
            await asyncio.sleep(0)
