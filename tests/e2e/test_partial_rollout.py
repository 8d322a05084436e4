"""Partial rollouts through the whole stack (real processes over loopback, driven by the SDK):
early termination returns the samples still running aborted with their tokens, and a later rollout resumes them.
The resume is checked token for token against an uninterrupted greedy run on the torch engine (the tiny MiMo)."""

from __future__ import annotations

import math

import pytest
from mimo_client import AsyncMimoClient, GroupFinished, RolloutFinished, RolloutPrompt, SampleFinished

from services.stack import Stack, random_ports_plan
from tests.support.router_stack import sim_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def collect(events) -> tuple[list[SampleFinished], list[GroupFinished], RolloutFinished]:
    samples, groups, finished = [], [], None
    async for event in events:
        if isinstance(event, SampleFinished):
            samples.append(event)
        elif isinstance(event, GroupFinished):
            groups.append(event)
        elif isinstance(event, RolloutFinished):
            finished = event
    assert finished is not None
    return samples, groups, finished


async def test_early_termination_returns_running_samples_partial_and_a_later_rollout_resumes_them(tiny_model, tmp_path):
    prompts = [RolloutPrompt(f"p{i}", token_ids=[1, 82, 71, 78, 2, 1, 90 + i]) for i in range(8)]
    async with (
        sim_stack(tiny_model, tmp_path / "logs", num_workers=2) as stack,
        AsyncMimoClient(stack.child("router").spec.target, stream_timeout_s=120) as client,
    ):
        events = client.rollout(
            prompts, samples_per_prompt=2, max_new_tokens=600, early_termination="fifo", target_prompts=1,
            partial_rollout=True,
        )  # fmt: skip
        samples, groups, finished = await collect(events)
        assert finished.early_terminated
        partial = [s for s in samples if s.finish_reason == "abort"]
        assert partial, "samples still running at the termination come back"
        assert all(0 < len(s.token_ids) < 600 for s in partial)  # (the sim computes no logprobs)
        assert finished.num_samples_aborted == 16 - len([s for s in samples if s.finish_reason != "abort"])
        partial_prompts = {s.prompt_id for s in partial}
        assert partial_prompts <= set(finished.unfinished_prompt_ids)
        assert all(g.num_aborted > 0 for g in groups if g.prompt_id in partial_prompts)

        by_id = {p.prompt_id: p for p in prompts}
        resumed = [RolloutPrompt(s.prompt_id, token_ids=by_id[s.prompt_id].token_ids, resume=s.partial())
                   for s in partial]  # fmt: skip
        again, _, done = await collect(client.rollout(resumed, max_new_tokens=600))
        assert done.num_samples_aborted == 0 and len(again) == len(partial)
        before = {(s.prompt_id, s.sample_index): s for s in partial}
        for s in again:
            old = before[(s.prompt_id, s.sample_index)]
            assert s.token_ids[: len(old.token_ids)] == old.token_ids and s.num_resumed_tokens == len(old.token_ids)
            assert s.prompt_token_ids == by_id[s.prompt_id].token_ids and s.finish_reason in {"stop", "length"}
            assert len(s.token_ids) <= 600 and s.usage.completion_tokens == len(s.token_ids)


async def test_a_resumed_greedy_sample_equals_the_uninterrupted_one_token_for_token(tiny_model, tmp_path):
    prompt = [1, 82, 71, 78, 2, 1, 90, 91, 92, 93]
    stack = Stack(random_ports_plan(tiny_model, engine="torch", num_workers=1).specs(), tmp_path / "logs")
    await stack.start()
    try:
        async with AsyncMimoClient(stack.child("router").spec.target, stream_timeout_s=120) as client:
            options = {"temperature": 0.0, "max_new_tokens": 40, "ignore_eos": True}
            (whole,), _, _ = await collect(client.rollout([RolloutPrompt("p", token_ids=prompt)], **options))
            assert len(whole.token_ids) == 40
            cut = whole.partial()
            cut = type(cut)(cut.sample_index, cut.token_ids[:13], cut.logprobs[:13], cut.weight_version)
            (resumed,), _, _ = await collect(
                client.rollout([RolloutPrompt("p", token_ids=prompt, resume=cut)], **options)
            )
            assert resumed.token_ids == whole.token_ids and resumed.num_resumed_tokens == 13
            assert resumed.resumed_weight_version == whole.sample_weight_version
            assert all(math.isclose(a, b, abs_tol=1e-3) for a, b in zip(resumed.logprobs, whole.logprobs, strict=True))
            assert resumed.text == whole.text and resumed.prompt_token_ids == prompt
    finally:
        await stack.stop()
