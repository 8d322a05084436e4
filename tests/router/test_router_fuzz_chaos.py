"""Fuzz and chaos against a real router over sim workers (real processes, real gRPC):
- hypothesis-drawn Generate/Chat/Rollout requests each get a documented status, and the router stays healthy;
- the tokenizer service killed under load: the router keeps serving from its cached artifacts;
- SIGTERM to the router under load: every call already in flight finishes, the process exits 0.
(A worker killed under load: test_router_faults.py; the verifier: test_rewards_outage.py.)"""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mimo_client.v1 import common_pb2, inference_pb2, rollout_pb2, verifier_pb2

from tests.support.router_stack import inference_stub, rollout_stub, sim_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}

floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32))
ints = st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1))
texts = st.text(max_size=40)


@st.composite
def sampling(draw) -> common_pb2.SamplingParams:
    s = common_pb2.SamplingParams(
        stop=draw(st.lists(texts, max_size=3)),
        stop_token_ids=draw(st.lists(st.integers(0, 2**32 - 1), max_size=3)),
        ignore_eos=draw(st.booleans()),
    )
    for name in ("temperature", "top_p", "min_p", "repetition_penalty", "frequency_penalty", "presence_penalty"):
        if (value := draw(floats)) is not None:
            setattr(s, name, value)
    if (top_k := draw(ints)) is not None:
        s.top_k = top_k
    s.max_new_tokens = draw(st.integers(0, 2**32 - 1).filter(lambda x: x % 7 != 0) | st.integers(1, 16))
    return s


messages = st.lists(
    st.builds(common_pb2.ChatMessage, role=st.sampled_from(["user", "system", "assistant", "x", ""]), content=texts),
    max_size=4,
)


@st.composite
def calls(draw):
    kind = draw(st.sampled_from(["generate", "chat", "rollout"]))
    common = {"n": draw(st.integers(0, 100)), "sampling": draw(sampling())}
    if kind == "generate":
        request = inference_pb2.GenerateRequest(
            text=draw(texts), model=draw(st.sampled_from(["", "mimo", "other"])), top_logprobs=draw(st.integers(0, 30)),
            return_logprobs=draw(st.booleans()), request_id=draw(texts), **common,
        )  # fmt: skip
        return kind, request
    if kind == "chat":
        return kind, inference_pb2.ChatRequest(messages=draw(messages), **common)
    prompt = rollout_pb2.RolloutPrompt(
        prompt_id=draw(texts),
        messages=rollout_pb2.ChatMessages(messages=draw(messages)),
        math=verifier_pb2.MathTask(references=draw(st.lists(texts, max_size=2))),
    )
    return kind, rollout_pb2.RolloutRequest(
        prompts=[prompt], samples_per_prompt=draw(st.integers(0, 80)), sampling=common["sampling"],
        mode=draw(st.integers(0, 3)), early_termination=draw(st.integers(0, 3)), target_prompts=draw(st.integers(0, 2)),
    )  # fmt: skip


async def status_of(channel: grpc.aio.Channel, kind: str, request) -> grpc.StatusCode:
    try:
        if kind == "generate":
            await inference_stub(channel).Generate(request, timeout=20)
        elif kind == "chat":
            await inference_stub(channel).Chat(request, timeout=20)
        else:
            async for _ in rollout_stub(channel).Rollout(request, timeout=20):
                pass
    except grpc.aio.AioRpcError as e:
        return e.code()
    return grpc.StatusCode.OK


async def healthy(channel: grpc.aio.Channel) -> bool:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_fuzzed_requests_get_documented_statuses_and_the_router_stays_healthy(model_dir, tmp_path):
    drawn: list = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(calls())
    def collect(call) -> None:
        drawn.append(call)

    collect()
    async with sim_stack(model_dir, tmp_path, time_scale=0.0, with_verifier=True) as stack:
        channel = grpc.aio.insecure_channel(stack.child("router").spec.target)
        for kind, request in drawn:
            code = await status_of(channel, kind, request)
            assert code in DOCUMENTED, (code, kind, request)
        assert await healthy(channel)
        await channel.close()


async def load(channel: grpc.aio.Channel, count: int) -> list[str]:
    sampling = common_pb2.SamplingParams(max_new_tokens=60, ignore_eos=True)

    async def one(i: int) -> str:
        try:
            await inference_stub(channel).Generate(
                inference_pb2.GenerateRequest(text=f"q{i}", sampling=sampling), timeout=60
            )
            return "ok"
        except grpc.aio.AioRpcError as e:
            return e.code().name

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def test_the_tokenizer_dying_under_load_does_not_stop_the_router(model_dir, tmp_path):
    async with sim_stack(model_dir, tmp_path, time_scale=0.5) as stack:
        stack.max_restarts = 0  # keep it dead
        async with grpc.aio.insecure_channel(stack.child("router").spec.target) as channel:
            running = asyncio.ensure_future(load(channel, 16))
            await asyncio.sleep(0.3)
            stack.child("tokenizer").process.kill()
            assert (await running).count("ok") == 16
            assert (await load(channel, 8)).count("ok") == 8 and await healthy(channel)


async def test_sigterm_to_the_router_under_load_finishes_every_call_in_flight(model_dir, tmp_path):
    async with sim_stack(model_dir, tmp_path, time_scale=0.5) as stack:
        router = stack.child("router")
        stack.max_restarts = 0
        async with grpc.aio.insecure_channel(router.spec.target) as channel:
            running = asyncio.ensure_future(load(channel, 16))
            await asyncio.sleep(0.5)  # all 16 are in flight (60 tokens at the sim's pace take seconds)
            router.process.send_signal(signal.SIGTERM)
            assert (await running).count("ok") == 16
            assert await asyncio.wait_for(router.process.wait(), 30) == 0
