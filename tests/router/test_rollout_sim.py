"""Rollouts end to end on sim workers with the real verifier: events, early termination, cancel, bad input."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import pytest_asyncio
from mimo_client.v1 import common_pb2, rollout_pb2, verifier_pb2

from tests.support.router_stack import rollout_stub, sim_stack, worker_load

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(model_dir, tmp_path_factory):
    async with sim_stack(model_dir, tmp_path_factory.mktemp("logs"), time_scale=0.2, with_verifier=True) as s:
        yield s


@pytest_asyncio.fixture(loop_scope="module")
async def stub(stack):
    async with grpc.aio.insecure_channel(stack.child("router").spec.target) as channel:
        yield rollout_stub(channel)


def prompts(count: int) -> list[rollout_pb2.RolloutPrompt]:
    return [
        rollout_pb2.RolloutPrompt(
            prompt_id=f"p{i}",
            messages=rollout_pb2.ChatMessages(
                messages=[common_pb2.ChatMessage(role="user", content=f"What is {i} + {i}?")]
            ),
            math=verifier_pb2.MathTask(references=[str(2 * i)]),
        )
        for i in range(count)
    ]


async def collect(stub, request) -> list[rollout_pb2.RolloutEvent]:
    return [event async for event in stub.Rollout(request, timeout=60)]


async def workers_idle(stack) -> bool:
    targets = [c.spec.target for c in stack.children if c.spec.name.startswith("worker")]
    return sum([(await worker_load(t)).num_running_reqs for t in targets]) == 0


@pytest.mark.parametrize("mode", [rollout_pb2.ROLLOUT_MODE_SEAMLESS, rollout_pb2.ROLLOUT_MODE_SYNCHRONOUS])
async def test_every_sample_gets_a_reward_and_every_group_a_summary(stub, mode):
    request = rollout_pb2.RolloutRequest(
        rollout_id="r1",
        prompts=prompts(6),
        samples_per_prompt=4,
        weight_version="step-7",
        mode=mode,
        sampling=common_pb2.SamplingParams(max_new_tokens=24),
        sync_batch_prompts=3,
    )
    events = await collect(stub, request)
    samples = [e.sample for e in events if e.HasField("sample")]
    groups = [e.group for e in events if e.HasField("group")]
    assert {e.weight_version for e in events} == {"step-7"} and {e.rollout_id for e in events} == {"r1"}
    assert sorted((s.prompt_index, s.sample_index) for s in samples) == [(p, i) for p in range(6) for i in range(4)]
    for s in samples:
        assert (
            s.verification.verdict != verifier_pb2.VERDICT_UNSPECIFIED
            and s.verification.task_id == f"p{s.prompt_index}/{s.sample_index}"
        )
        assert s.verification.verdict != verifier_pb2.VERDICT_ERROR, s.verification.reason
        assert len(s.token_ids) > 0 and s.reward == s.verification.reward
    assert sorted(g.prompt_index for g in groups) == list(range(6)) and all(g.num_samples == 4 for g in groups)
    # a group summary comes after all of its samples
    order = [
        (e.WhichOneof("event"), e.sample.prompt_index if e.HasField("sample") else e.group.prompt_index) for e in events
    ]
    for p in range(6):
        last_sample = max(i for i, (kind, idx) in enumerate(order) if kind == "sample" and idx == p)
        assert order.index(("group", p)) > last_sample
    finished = events[-1].finished
    assert finished.num_prompts_finished == 6 and finished.num_samples_finished == 24 and not finished.early_terminated


async def test_fifo_early_termination_aborts_the_rest(stack, stub):
    request = rollout_pb2.RolloutRequest(
        prompts=prompts(8),
        samples_per_prompt=2,
        early_termination=rollout_pb2.EARLY_TERMINATION_POLICY_FIFO,
        target_prompts=3,
        max_samples_in_flight=16,
        sampling=common_pb2.SamplingParams(max_new_tokens=1500),
    )
    # sim output lengths are long-tailed (the profile's lognormal): the first three groups done end the rollout
    events = await collect(stub, request)
    finished = events[-1].finished
    assert finished.early_terminated and finished.num_prompts_finished >= 3
    assert finished.num_prompts_unfinished == 8 - finished.num_prompts_finished
    assert len(finished.unfinished_prompt_ids) == finished.num_prompts_unfinished
    for _ in range(50):
        if await workers_idle(stack):
            break
        await asyncio.sleep(0.1)
    assert await workers_idle(stack)


async def test_cancelling_the_stream_aborts_every_worker_request(stack, stub):
    request = rollout_pb2.RolloutRequest(
        prompts=prompts(8),
        samples_per_prompt=4,
        sampling=common_pb2.SamplingParams(max_new_tokens=1500, ignore_eos=True),
    )
    call = stub.Rollout(request, timeout=60)
    await asyncio.sleep(0.5)
    assert not await workers_idle(stack)
    call.cancel()
    for _ in range(50):
        if await workers_idle(stack):
            break
        await asyncio.sleep(0.1)
    assert await workers_idle(stack)


@pytest.mark.parametrize(
    "request_,field",
    [
        (rollout_pb2.RolloutRequest(), "prompts"),
        (rollout_pb2.RolloutRequest(prompts=[rollout_pb2.RolloutPrompt(prompt_id="x")]), "prompts[0].input"),
        (
            rollout_pb2.RolloutRequest(prompts=prompts(2), early_termination=rollout_pb2.EARLY_TERMINATION_POLICY_FIFO),
            "target_prompts",
        ),
        (rollout_pb2.RolloutRequest(prompts=prompts(2), samples_per_prompt=500), "samples_per_prompt"),
        (
            rollout_pb2.RolloutRequest(
                prompts=[
                    rollout_pb2.RolloutPrompt(token_ids=common_pb2.TokenIds(ids=[10**7]), math=verifier_pb2.MathTask())
                ]
            ),
            "prompts[0].token_ids",
        ),
    ],
)
async def test_bad_rollout_requests_name_the_field(stub, request_, field):
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await collect(stub, request_)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith(field), e.value.details()
