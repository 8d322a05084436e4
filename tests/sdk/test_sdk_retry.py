"""Retries: only where safe, with backoff, within the call's deadline; and deadlines themselves."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import grpc
import pytest
from mimo_client import (
    NO_RETRY,
    DeadlineExceeded,
    InvalidArgument,
    MathTask,
    ResourceExhausted,
    RetryPolicy,
    RolloutPrompt,
    Unavailable,
)

from tests.support.sdk_api import Api
from tests.support.sdk_fakes import ANSWER, FakeServer, retry_info_trailer

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


async def test_idempotent_call_succeeds_on_third_attempt(api: Api, fake: FakeServer) -> None:
    fake.script.fail("Tokenize", UNAVAILABLE, "worker restarting", times=2)
    assert (await api.call("tokenize", "ok")).ids == [111, 107]
    assert fake.script.calls["Tokenize"] == 3


async def test_generate_retried_on_unavailable_before_a_response(api: Api, fake: FakeServer) -> None:
    fake.script.fail("Generate", UNAVAILABLE, "no worker", times=2)
    assert (await api.call("generate", "2+2?", split_reasoning=True)).text == ANSWER
    assert fake.script.calls["Generate"] == 3


async def test_gives_up_after_max_attempts_with_the_last_error(api: Api, fake: FakeServer) -> None:
    fake.script.fail("CountTokens", UNAVAILABLE, "still down", times=5)
    with pytest.raises(Unavailable, match="still down"):
        await api.call("count_tokens", "x")
    assert fake.script.calls["CountTokens"] == 3


async def test_invalid_argument_is_never_retried(api: Api, fake: FakeServer) -> None:
    fake.script.fail("Verify", grpc.StatusCode.INVALID_ARGUMENT, "tasks[0].math.references: must not be empty", times=2)
    with pytest.raises(InvalidArgument, match=r"tasks\[0\]\.math\.references"):
        await api.call("verify_math", "\\boxed{1}", [])
    assert fake.script.calls["Verify"] == 1


async def test_generate_not_retried_on_resource_exhausted_even_if_configured(
    make_api: Callable[..., Api], fake: FakeServer
) -> None:
    codes = frozenset({UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
    api = make_api(retry=RetryPolicy(initial_backoff_s=0.01, retryable_codes=codes))
    fake.script.fail("Generate", grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", times=1)
    with pytest.raises(ResourceExhausted):
        await api.call("generate", "x")
    assert fake.script.calls["Generate"] == 1  # work the server may have started is never repeated


async def test_idempotent_retry_waits_for_the_servers_retry_after(
    make_api: Callable[..., Api], fake: FakeServer
) -> None:
    codes = frozenset({UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
    api = make_api(retry=RetryPolicy(initial_backoff_s=0.001, max_backoff_s=0.002, retryable_codes=codes))
    fake.script.fail("CountTokens", grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", trailing=[("retry-after-ms", "300")])
    start = time.monotonic()
    assert await api.call("count_tokens", "abc") == 3
    assert time.monotonic() - start >= 0.3 and fake.script.calls["CountTokens"] == 2


async def test_idempotent_retry_waits_for_the_standard_retry_info(
    make_api: Callable[..., Api], fake: FakeServer
) -> None:
    codes = frozenset({UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
    api = make_api(retry=RetryPolicy(initial_backoff_s=0.001, max_backoff_s=0.002, retryable_codes=codes))
    fake.script.fail("CountTokens", grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", trailing=retry_info_trailer(0.3))
    start = time.monotonic()
    assert await api.call("count_tokens", "abc") == 3
    assert time.monotonic() - start >= 0.3 and fake.script.calls["CountTokens"] == 2


async def test_stream_retried_before_its_first_message(api: Api, fake: FakeServer) -> None:
    fake.script.fail("ChatStream", UNAVAILABLE, "no worker", times=1)
    deltas = await api.collect("chat_stream", [{"role": "user", "content": "hi"}])
    assert "".join(d.text for d in deltas) == ANSWER and fake.script.calls["ChatStream"] == 2


async def test_stream_never_retried_after_a_message(api: Api, fake: FakeServer) -> None:
    fake.script.fail_after_first["GenerateStream"] = (UNAVAILABLE, "worker died", ())
    deltas, error = await api.collect_until_error("generate_stream", "2+2?")
    assert [d.text for d in deltas] == ["The"]
    assert isinstance(error, Unavailable) and error.message == "worker died"
    assert fake.script.calls["GenerateStream"] == 1


async def test_rollout_never_retried_after_an_event(api: Api, fake: FakeServer) -> None:
    fake.script.fail_after_first["Rollout"] = (UNAVAILABLE, "router restarting", ())
    prompts = [RolloutPrompt("p0", token_ids=[1], reward=MathTask(["4"]))]
    events, error = await api.collect_until_error("rollout", prompts, samples_per_prompt=4)
    assert len(events) == 1 and isinstance(error, Unavailable) and fake.script.calls["Rollout"] == 1


async def test_no_retry_policy(make_api: Callable[..., Api], fake: FakeServer) -> None:
    api = make_api(retry=NO_RETRY)
    fake.script.fail("ListModels", UNAVAILABLE, "down", times=1)
    with pytest.raises(Unavailable):
        await api.call("list_models")
    assert fake.script.calls["ListModels"] == 1


@pytest.mark.parametrize("method, args", [("tokenize", ("x",)), ("generate", ("x",))])
async def test_slow_server_hits_the_per_call_deadline(api: Api, fake: FakeServer, method: str, args: tuple) -> None:
    fake.script.delay_s["Tokenize" if method == "tokenize" else "Generate"] = 10.0
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await api.call(method, *args, timeout_s=0.3)
    assert 0.25 <= time.monotonic() - start < 1.5


async def test_client_default_deadline_and_stream_deadline(make_api: Callable[..., Api], fake: FakeServer) -> None:
    api = make_api(timeout_s=0.2, stream_timeout_s=0.3)
    fake.script.delay_s.update(ListModels=10.0, GenerateStream=10.0)
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await api.call("list_models")
    _, error = await api.collect_until_error("generate_stream", "x")
    assert isinstance(error, DeadlineExceeded)
    assert time.monotonic() - start < 2.0


async def test_deadline_covers_all_attempts(make_api: Callable[..., Api], fake: FakeServer) -> None:
    api = make_api(retry=RetryPolicy(max_attempts=100, initial_backoff_s=0.05, max_backoff_s=0.05))
    fake.script.fail("Tokenize", UNAVAILABLE, "down", times=100)
    start = time.monotonic()
    with pytest.raises((Unavailable, DeadlineExceeded)):
        await api.call("tokenize", "x", timeout_s=0.4)
    assert time.monotonic() - start < 2.0 and fake.script.calls["Tokenize"] < 20  # 100 attempts would take ~4 s


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=1.0, multiplier=2.0)
    rng = random.Random(0)
    for retry, ceiling_s in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        delays = [policy.backoff_s(retry, rng) for _ in range(200)]
        assert ceiling_s / 2 <= min(delays) and max(delays) <= ceiling_s
        assert max(delays) - min(delays) > ceiling_s / 4  # jittered, not a constant


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="initial_backoff_s"):
        RetryPolicy(initial_backoff_s=2.0, max_backoff_s=1.0)
