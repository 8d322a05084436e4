"""A rollout on the tiny MiMo with real rewards: 32 math prompts x 8 samples through the whole stack."""

from __future__ import annotations

import random

import grpc
import pytest
from mimo_client.v1 import common_pb2, rollout_pb2, rollout_pb2_grpc, verifier_pb2, verifier_pb2_grpc

from services.stack import Stack, random_ports_plan

pytestmark = pytest.mark.e2e


def problems(count: int) -> list[tuple[str, int]]:
    rng = random.Random(5)
    out = []
    for i in range(count):
        a, b, d = rng.randint(10, 99), rng.randint(10, 99), rng.randint(2, 9)
        out.append([(f"What is {a} + {b}?", a + b), (f"What is {a} * {d}?", a * d),
                    (f"Solve for x: {d}x + {b} = {d * a + b}.", a)][i % 3])  # fmt: skip
    return out


async def test_rollout_rewards_agree_with_the_verifier_and_pass_rates_vary(tiny_model, tmp_path):
    items = problems(32)
    prompts = [
        rollout_pb2.RolloutPrompt(
            prompt_id=f"q{i}",
            messages=rollout_pb2.ChatMessages(
                messages=[
                    common_pb2.ChatMessage(role="system", content=""),
                    common_pb2.ChatMessage(role="user", content=q),
                ]
            ),
            math=verifier_pb2.MathTask(references=[str(a)]),
        )
        for i, (q, a) in enumerate(items)
    ]
    request = rollout_pb2.RolloutRequest(
        rollout_id="tiny", prompts=prompts, samples_per_prompt=8, weight_version="w1",
        sampling=common_pb2.SamplingParams(max_new_tokens=400),
    )  # fmt: skip
    plan = random_ports_plan(tiny_model, engine="torch", num_workers=2)
    stack = Stack(plan.specs(), tmp_path)
    await stack.start()
    try:
        async with grpc.aio.insecure_channel(stack.child("router").spec.target) as channel:
            events = [e async for e in rollout_pb2_grpc.RolloutStub(channel).Rollout(request, timeout=600)]
        samples = [e.sample for e in events if e.HasField("sample")]
        groups = {e.group.prompt_index: e.group for e in events if e.HasField("group")}
        assert len(samples) == 32 * 8 and len(groups) == 32
        # the same responses sent to the verifier directly get the same rewards
        tasks = [verifier_pb2.VerifyTask(task_id=f"{s.prompt_index}/{s.sample_index}", response=s.text,
                                         math=verifier_pb2.MathTask(references=[str(items[s.prompt_index][1])]))
                 for s in samples]  # fmt: skip
        async with grpc.aio.insecure_channel(stack.child("verifier").spec.target) as channel:
            direct = await verifier_pb2_grpc.VerifierStub(channel).Verify(
                verifier_pb2.VerifyRequest(tasks=tasks), timeout=300
            )
    finally:
        await stack.stop()
    for sample, result in zip(samples, direct.results, strict=True):
        assert sample.reward == result.reward and sample.verification.verdict == result.verdict, sample.text[-200:]
    rates = [g.pass_rate for g in groups.values()]
    assert len(set(rates)) >= 3, rates  # pass rates vary between prompts
    assert 0 < sum(rates) / len(rates) < 1
    for g in groups.values():
        rewards = [s.reward for s in samples if s.prompt_index == g.prompt_index]
        assert g.mean_reward == pytest.approx(sum(rewards) / 8)
        assert g.all_correct == (g.pass_rate == 1.0) and g.all_wrong == (g.pass_rate == 0.0)
