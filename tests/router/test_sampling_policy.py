"""Dynamic sampling and open rewards, in-process: a real Pipeline and rollout run over paced scripted schedulers
(stand-ins for workers: SGLang cannot run here) and scripted mimo.v1.Verifier services over real gRPC (a stand-in
for a reward model behind Verify). Each prompt's first token picks how long its request takes."""

from __future__ import annotations

import asyncio

import pytest
from mimo_client.v1 import common_pb2, rollout_pb2, verifier_pb2

from services.router import wire
from services.router.domain import GroupFinished, RolloutFinished, SampleFinished, Verdict
from services.router.rewards import RewardClient
from services.router.rollout import stream_rollout
from services.router.rollout_runs import RolloutRuns
from services.router.sampling_policy import LaunchBook
from services.router.scorers import ScorerPool
from tests.support.rollout_policy import paced_pipeline, scripted_verifier

N = 2
MIXED = {0}  # sample 0 right, sample 1 wrong: reward variance


def prompts(count: int, reward: bool = True) -> list[rollout_pb2.RolloutPrompt]:
    out = []
    for i in range(count):
        p = rollout_pb2.RolloutPrompt(prompt_id=f"p{i}", token_ids=common_pb2.TokenIds(ids=[i + 1, 7, 8]))
        if reward:
            p.math.CopyFrom(verifier_pb2.MathTask(references=["1"]))
        out.append(p)
    return out


async def run(pipeline, verifier_target: str, request: rollout_pb2.RolloutRequest):
    spec = wire.rollout_spec(request, pipeline.vocab_size, None)
    runs = RolloutRuns(ScorerPool(RewardClient(verifier_target, retry_s=0.5)))
    try:
        events = [e async for e in stream_rollout(runs.build(pipeline, spec))]
    finally:
        await runs.close()
    groups = {e.prompt_id: e for e in events if isinstance(e, GroupFinished)}
    samples = [e for e in events if isinstance(e, SampleFinished)]
    (finished,) = [e for e in events if isinstance(e, RolloutFinished)]
    return groups, samples, finished


def test_the_launch_book_selects_in_launch_order_only_when_everything_before_has_finished():
    book = LaunchBook(target=2)
    for i in range(4):
        book.launched(i)
    book.finished(1, True)
    book.finished(2, True)
    assert book.selection() is None  # 1 and 2 are valid, but 0 (launched first) is still running
    book.finished(0, False)  # zero variance: not counted, but settled
    assert book.selection() == [1, 2] and book.active() == [3]


async def test_launch_order_termination_waits_for_a_long_group_launched_first_and_aborts_a_later_one(model_dir):
    # p0 (launched first) and p5 are slow; every group has reward variance
    delays = {1: 1.5, 6: 30.0}
    async with (
        paced_pipeline(model_dir, delays) as (pipeline, fake),
        scripted_verifier({f"p{i}": MIXED for i in range(8)}) as (target, _),
    ):
        request = rollout_pb2.RolloutRequest(
            prompts=prompts(8),
            samples_per_prompt=N,
            target_valid_groups=3,
            early_termination=rollout_pb2.EARLY_TERMINATION_POLICY_LAUNCH_ORDER,
            scorer=target,
        )
        groups, _, finished = await run(pipeline, target, request)
    # p1..p3 finished long before p0, yet the batch is the first three valid groups in LAUNCH order
    assert finished.batch.selected_prompt_ids == ("p0", "p1", "p2")
    assert "p0" in groups and not groups["p0"].zero_variance
    assert finished.early_terminated and "p5" in finished.unfinished_prompt_ids
    assert 6 in fake.cancelled_first_tokens  # the worker's request for p5 was aborted
    assert finished.batch.target_met and finished.batch.num_groups_surplus == finished.batch.num_groups_valid - 3


@pytest.mark.parametrize("mode", [rollout_pb2.ROLLOUT_MODE_SEAMLESS, rollout_pb2.ROLLOUT_MODE_SYNCHRONOUS])
async def test_zero_variance_groups_are_reported_and_not_counted(model_dir, mode):
    correct = {"p0": {0, 1}, "p1": set(), "p2": MIXED, "p3": MIXED, "p4": MIXED, "p5": MIXED}
    async with paced_pipeline(model_dir, {}) as (pipeline, _), scripted_verifier(correct) as (target, _):
        request = rollout_pb2.RolloutRequest(
            prompts=prompts(6),
            samples_per_prompt=N,
            target_valid_groups=2,
            mode=mode,
            sync_batch_prompts=2,
            max_samples_in_flight=2 * N,  # two groups at a time: p0 and p1 first
        )
        groups, _, finished = await run(pipeline, target, request)
    assert groups["p0"].zero_variance and groups["p0"].all_correct
    assert groups["p1"].zero_variance and groups["p1"].all_wrong
    assert not groups["p2"].zero_variance
    assert finished.batch.selected_prompt_ids == ("p2", "p3")  # p0, p1 dropped; not counted toward the 2
    assert finished.batch.num_groups_zero_variance == 2 and finished.batch.target_met
    if mode == rollout_pb2.ROLLOUT_MODE_SYNCHRONOUS:
        assert finished.batch.num_prompts_launched == 4  # naive: batch [p0, p1], then [p2, p3]


async def test_the_over_sampling_cap_stops_launching_and_says_the_target_was_not_met(model_dir):
    async with paced_pipeline(model_dir, {}) as (pipeline, _), scripted_verifier({}) as (target, _):
        request = rollout_pb2.RolloutRequest(
            prompts=prompts(10), samples_per_prompt=N, target_valid_groups=2, max_prompts_launched=4
        )
        groups, _, finished = await run(pipeline, target, request)  # every group all wrong
    assert finished.batch.num_prompts_launched == 4 and len(groups) == 4
    assert not finished.batch.target_met and finished.batch.selected_prompt_ids == ()


async def test_a_prompt_without_a_reward_task_is_sampled_only(model_dir):
    async with paced_pipeline(model_dir, {}) as (pipeline, _), scripted_verifier({}) as (target, verifier):
        request = rollout_pb2.RolloutRequest(prompts=prompts(2, reward=False), samples_per_prompt=N)
        groups, samples, finished = await run(pipeline, target, request)
    assert finished.num_samples_finished == 2 * N and finished.batch.selected_prompt_ids == ()
    assert len(samples) == 2 * N and all(s.reward.verdict is Verdict.UNSPECIFIED for s in samples)
    assert all(s.token_ids == (11, 12, 13, 14) for s in samples)
    assert all(not g.scored for g in groups.values()) and verifier.seen == []  # the router's verifier not asked
    pb = wire.rollout_event_pb(wire.rollout_spec(request, pipeline.vocab_size, None), samples[0])
    assert pb.sample.verification.verdict == verifier_pb2.VERDICT_UNSPECIFIED


async def test_an_external_verify_service_scores_open_prompts(model_dir):
    async with paced_pipeline(model_dir, {}) as (pipeline, _), scripted_verifier({"p0": {1}}) as (rm, reward_model):
        request = rollout_pb2.RolloutRequest(prompts=prompts(1, reward=False), samples_per_prompt=N, scorer=rm)
        groups, samples, _ = await run(pipeline, "127.0.0.1:1", request)  # the router's verifier is down
    assert sorted((s.sample_index, s.reward.reward) for s in samples) == [(0, 0.0), (1, 1.0)]
    assert groups["p0"].scored and not groups["p0"].zero_variance
    assert [t.WhichOneof("kind") for t in reward_model.seen] == [None, None]  # the response alone
    assert sorted(t.task_id for t in reward_model.seen) == ["p0/0", "p0/1"]


async def test_many_concurrent_dynamic_rollouts_share_one_pipeline(model_dir):
    async with (
        paced_pipeline(model_dir, {}) as (pipeline, _),
        scripted_verifier({f"p{i}": MIXED for i in range(6)}) as (target, _),
    ):
        request = rollout_pb2.RolloutRequest(prompts=prompts(6), samples_per_prompt=N, target_valid_groups=3)
        results = await asyncio.gather(*(run(pipeline, target, request) for _ in range(3)))
    assert all(f.batch.selected_prompt_ids == ("p0", "p1", "p2") for _, _, f in results)
