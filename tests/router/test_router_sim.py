"""The router end to end over loopback: tokenizer service + sim workers + router, real processes."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
import pytest_asyncio
from mimo_client.v1 import common_pb2, inference_pb2

from tests.support.router_stack import inference_stub, sim_stack, worker_load

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(model_dir, tmp_path_factory):
    async with sim_stack(
        model_dir, tmp_path_factory.mktemp("logs"), time_scale=0.2, router_args=("--max-in-flight", "64")
    ) as s:
        yield s


@pytest_asyncio.fixture(loop_scope="module")
async def stub(stack):
    async with grpc.aio.insecure_channel(stack.child("router").spec.target) as channel:
        yield inference_stub(channel)


def user(text: str) -> list[common_pb2.ChatMessage]:
    return [common_pb2.ChatMessage(role="system", content=""), common_pb2.ChatMessage(role="user", content=text)]


async def test_generate_n_samples_with_usage_and_length_finish(stub):
    request = inference_pb2.GenerateRequest(
        text="What is 2 + 3?", n=3, sampling=common_pb2.SamplingParams(max_new_tokens=7, ignore_eos=True)
    )
    response = await stub.Generate(request, timeout=30)
    assert [c.index for c in response.choices] == [0, 1, 2]
    for choice in response.choices:
        assert len(choice.token_ids) == 7 and choice.finish_reason == common_pb2.FINISH_REASON_LENGTH
    assert response.usage.completion_tokens == 21 and response.usage.prompt_tokens > 0
    assert response.request_id.startswith("mimo-")


async def test_stream_concatenates_to_the_unary_answer_for_the_same_seed(stub):
    sampling = common_pb2.SamplingParams(max_new_tokens=12, seed=7)
    whole = await stub.Chat(inference_pb2.ChatRequest(messages=user("hi"), sampling=sampling), timeout=30)
    text, ids, finish = "", [], None
    async for message in stub.ChatStream(inference_pb2.ChatRequest(messages=user("hi"), sampling=sampling), timeout=30):
        text += message.delta.reasoning + message.delta.text
        ids += message.delta.token_ids
        if message.delta.finish_reason:
            finish = message.delta.finish_reason
        if message.HasField("usage"):
            usage = message.usage
    choice = whole.choices[0]
    assert ids == list(choice.token_ids)
    assert text == choice.reasoning + choice.text
    assert finish == choice.finish_reason and usage.completion_tokens == len(ids)


@pytest.mark.parametrize(
    "request_,field",
    [
        (inference_pb2.GenerateRequest(), "input"),
        (inference_pb2.GenerateRequest(text="x", sampling=common_pb2.SamplingParams(top_p=1.5)), "sampling.top_p"),
        (
            inference_pb2.GenerateRequest(text="x", sampling=common_pb2.SamplingParams(temperature=-1)),
            "sampling.temperature",
        ),
        (inference_pb2.GenerateRequest(text="x", n=1000), "n"),
        (inference_pb2.GenerateRequest(token_ids=common_pb2.TokenIds(ids=[10**7])), "input"),
        (
            inference_pb2.GenerateRequest(text="x", sampling=common_pb2.SamplingParams(max_new_tokens=10**7)),
            "sampling.max_new_tokens",
        ),
        (
            inference_pb2.GenerateRequest(text="x", sampling=common_pb2.SamplingParams(stop_token_ids=[10**6])),
            "sampling.stop_token_ids",
        ),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(stub, request_, field):
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.Generate(request_, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith(field + ":"), e.value.details()


async def test_bad_chat_role_names_the_message(stub):
    request = inference_pb2.ChatRequest(messages=[common_pb2.ChatMessage(role="robot", content="x")])
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.Chat(request, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "messages[0].role" in e.value.details()


async def test_deadline_is_honoured(stub):
    request = inference_pb2.GenerateRequest(
        text="long", sampling=common_pb2.SamplingParams(max_new_tokens=1500, ignore_eos=True)
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.Generate(request, timeout=0.3)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_client_cancel_aborts_on_the_worker(stack, stub):
    request = inference_pb2.GenerateRequest(
        text="cancel me", n=4, sampling=common_pb2.SamplingParams(max_new_tokens=1500, ignore_eos=True)
    )
    call = stub.GenerateStream(request, timeout=60)
    async for _ in call:
        break
    workers = [c.spec.target for c in stack.children if c.spec.name.startswith("worker")]
    assert sum([(await worker_load(w)).num_running_reqs for w in workers]) >= 1
    call.cancel()
    for _ in range(50):
        await asyncio.sleep(0.1)
        if sum([(await worker_load(w)).num_running_reqs for w in workers]) == 0:
            break
    assert sum([(await worker_load(w)).num_running_reqs for w in workers]) == 0


async def test_list_models_and_router_metrics(stack, stub):
    models = await stub.ListModels(inference_pb2.ListModelsRequest(), timeout=5)
    assert models.models[0].id == "mimo" and models.models[0].num_workers == 2 and models.models[0].vocab_size > 0
    await stub.Generate(
        inference_pb2.GenerateRequest(text="metrics", sampling=common_pb2.SamplingParams(max_new_tokens=3)), timeout=10
    )
    body = (
        urllib.request.urlopen(f"http://127.0.0.1:{stack.child('router').spec.metrics_port}/metrics", timeout=5)
        .read()
        .decode()
    )
    for name in (
        "mimo_router_requests_total",
        "mimo_router_time_to_first_token_seconds_bucket",
        "mimo_router_routing_decisions_total",
        "mimo_router_worker_ready",
        "mimo_router_end_to_end_latency_seconds",
    ):
        assert name in body, name
