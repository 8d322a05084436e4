"""Keyed auth on a real router over sim workers: named keys from a keys file, constant-time checks, a per-key request
limit refused with standard retry advice, tokens charged per key, health left open."""

from __future__ import annotations

import grpc
import pytest
import pytest_asyncio
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mimo_client.v1 import common_pb2, inference_pb2

from services.common.auth import ApiKey, KeyRing, Limited
from tests.support.router_stack import inference_stub, sim_stack

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]
KEYS = {
    "keys": [
        {"name": "trainer", "token": "tok-trainer"},
        {"name": "eval", "token": "tok-eval", "requests_per_minute": 2},
    ]
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(model_dir, tmp_path_factory):
    keys_file = tmp_path_factory.mktemp("keys") / "keys.yaml"
    keys_file.write_text(yaml.safe_dump(KEYS))
    router_args = ("--auth-keys-file", str(keys_file))
    async with sim_stack(model_dir, tmp_path_factory.mktemp("logs"), time_scale=0.2, router_args=router_args) as s:
        yield s


def generate() -> inference_pb2.GenerateRequest:
    return inference_pb2.GenerateRequest(text="2 + 2?", sampling=common_pb2.SamplingParams(max_new_tokens=3))


async def call(stack, token: str | None):
    async with grpc.aio.insecure_channel(stack.child("router").spec.target) as channel:
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        return await inference_stub(channel).Generate(generate(), metadata=metadata, timeout=30)


async def test_each_named_key_works_and_an_unknown_one_does_not(stack):
    assert len((await call(stack, "tok-trainer")).choices) == 1
    for bad in (None, "tok-nope", "tok-traine"):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call(stack, bad)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_key_over_its_request_limit_is_refused_with_retry_advice_and_others_are_not(stack):
    await call(stack, "tok-eval")
    await call(stack, "tok-eval")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call(stack, "tok-eval")
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "'eval'" in e.value.details()
    assert int(dict(e.value.trailing_metadata())["grpc-retry-pushback-ms"]) > 0
    assert len((await call(stack, "tok-trainer")).choices) == 1


async def test_health_stays_open(stack):
    async with grpc.aio.insecure_channel(stack.child("router").spec.target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_token_limit_refuses_once_the_window_is_spent():
    key = ApiKey("k", "t", tokens_per_minute=100)
    ring = KeyRing([key])
    assert ring.authenticate("Bearer t") is key and ring.authenticate("Bearer x") is None
    ring.admit(key)
    ring.charge_tokens(key, 150)  # one call may overshoot; the window is then full
    with pytest.raises(Limited) as e:
        ring.admit(key)
    assert 0 < e.value.retry_after_s <= 60
