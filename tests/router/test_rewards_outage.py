"""Rewards through a verifier outage (issue 20, D2) and reward calls spread over verifier replicas.

The in-process verifiers here are stand-ins that count calls and answer CORRECT (the real verifier is exercised
by the rollout tests); what is under test is the router's client: its retries and its gRPC load balancing."""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest
import pytest_asyncio
from mimo_client.v1 import common_pb2, rollout_pb2, verifier_pb2, verifier_pb2_grpc

from services.common.net import free_port
from services.router.domain import RewardRequest, RewardTask, Verdict
from services.router.rewards import RewardClient
from tests.support.router_stack import rollout_stub, sim_stack

MATH = RewardTask("math", verifier_pb2.MathTask(references=["4"]).SerializeToString())


class CountingVerifier(verifier_pb2_grpc.VerifierServicer):
    def __init__(self) -> None:
        self.calls = 0

    async def Verify(self, request, context):
        self.calls += 1
        return verifier_pb2.VerifyResponse(
            results=[
                verifier_pb2.VerifyResult(index=i, task_id=t.task_id, reward=1.0, verdict=verifier_pb2.VERDICT_CORRECT)
                for i, t in enumerate(request.tasks)
            ]
        )


async def serve(verifier: CountingVerifier, port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    verifier_pb2_grpc.add_VerifierServicer_to_server(verifier, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


def ask(i: int) -> list[RewardRequest]:
    return [RewardRequest(f"t{i}", "\\boxed{4}", MATH)]


async def test_two_verifier_replicas_behind_one_target_each_get_a_fair_share():
    a, b = CountingVerifier(), CountingVerifier()
    ports = free_port(), free_port()
    servers = [await serve(a, ports[0]), await serve(b, ports[1])]
    client = RewardClient(f"ipv4:127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}")
    results = [await client.verify(ask(i)) for i in range(40)]
    await client.close()
    for server in servers:
        await server.stop(0)
    assert all(r[0].verdict is Verdict.CORRECT for r in results)
    assert a.calls >= 10 and b.calls >= 10, (a.calls, b.calls)


async def test_a_verifier_outage_is_retried_until_it_comes_back():
    verifier, port = CountingVerifier(), free_port()
    client = RewardClient(f"127.0.0.1:{port}", retry_s=30)
    pending = asyncio.ensure_future(client.verify(ask(0)))
    await asyncio.sleep(1.0)  # nothing listens yet: calls fail UNAVAILABLE and are retried
    assert not pending.done()
    server = await serve(verifier, port)
    (reward,) = await asyncio.wait_for(pending, 30)
    assert reward.verdict is Verdict.CORRECT and verifier.calls == 1
    await server.stop(0)
    (late,) = await RewardClient(f"127.0.0.1:{port}", retry_s=0.3).verify(ask(1))  # the window runs out
    assert late.is_error and "verifier unavailable" in late.reason
    await client.close()


@pytest_asyncio.fixture
async def stack(model_dir, tmp_path):
    async with sim_stack(model_dir, tmp_path, time_scale=1.0, with_verifier=True) as s:
        yield s


@pytest.mark.slow
@pytest.mark.e2e
async def test_a_rollout_whose_verifier_is_killed_and_restarted_gets_every_reward(stack):
    prompts = [
        rollout_pb2.RolloutPrompt(
            prompt_id=f"p{i}",
            messages=rollout_pb2.ChatMessages(messages=[common_pb2.ChatMessage(role="user", content=f"{i} + {i}?")]),
            math=verifier_pb2.MathTask(references=[str(2 * i)]),
        )
        for i in range(12)
    ]
    request = rollout_pb2.RolloutRequest(
        rollout_id="outage", prompts=prompts, samples_per_prompt=4, max_samples_in_flight=8,
        sampling=common_pb2.SamplingParams(max_new_tokens=48),
    )  # fmt: skip
    verifier = stack.child("verifier")
    events, killed = [], False
    async with grpc.aio.insecure_channel(stack.child("router").spec.target) as channel:
        async for event in rollout_stub(channel).Rollout(request, timeout=180):
            events.append(event)
            if event.HasField("sample") and not killed:  # the verifier dies after the first reward
                verifier.process.send_signal(signal.SIGKILL)  # the stack's supervisor restarts it
                killed = True
    samples = [e.sample for e in events if e.HasField("sample")]
    groups = [e.group for e in events if e.HasField("group")]
    finished = events[-1].finished
    assert len(samples) == 48 and finished.num_prompts_finished == 12
    errors = [s for s in samples if s.verification.verdict == verifier_pb2.VERDICT_ERROR]
    assert finished.num_reward_errors == len(errors) == sum(g.num_reward_errors for g in groups)
    for g in groups:  # an outage never reads as wrong answers
        assert not (g.all_wrong and g.num_reward_errors), g
    assert len(errors) == 0, [s.verification.reason for s in errors][:3]
