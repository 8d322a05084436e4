"""Chunked prefill under a per-step token budget: same tokens as one-shot prefill, decodes keep running."""

from __future__ import annotations

import dataclasses

import pytest

from services.worker.engine_api import GenerateInput
from tests.support.torch_engine import SMALL, greedy, make_core, random_model, random_prompts, run_all

MODEL = random_model()


def requests() -> list[GenerateInput]:
    """Long and short prompts; some share block-aligned heads, so hits land on blocks still being chunked."""
    head = random_prompts(1, SMALL.vocab_size, seed=11, min_len=40, max_len=40)[0]
    prompts = random_prompts(10, SMALL.vocab_size, seed=12, min_len=1, max_len=70)
    prompts += [head + p for p in random_prompts(6, SMALL.vocab_size, seed=13)]
    return [GenerateInput(f"r{i}", tuple(p), greedy(5 + i % 9)) for i, p in enumerate(prompts)]


def tokens(core) -> dict[tuple[str, int], list[int]]:
    return {k: [t for c in v for t in c.token_ids] for k, v in run_all(core, requests()).items()}


@pytest.mark.parametrize("is_mtp", [False, True])
@pytest.mark.parametrize(("budget", "context"), [(7, 0.0), (32, 0.0), (32, 20.0)])
def test_chunked_prefill_keeps_the_one_shot_greedy_tokens(is_mtp: bool, budget: int, context: float) -> None:
    one_shot = make_core(MODEL, is_mtp=False)
    reference = tokens(one_shot)
    chunked = make_core(MODEL, is_mtp=is_mtp, max_batch_tokens=budget, attention_context=context)
    assert tokens(chunked) == reference
    assert chunked.blocks.num_hit_tokens > 0  # the shared heads were reused, not recomputed


def test_a_long_prompt_does_not_stall_running_streams_and_steps_stay_in_budget() -> None:
    core = make_core(MODEL, is_mtp=False, max_batch_tokens=16, attention_context=0.0)  # each token counts 1
    streams = [GenerateInput(f"s{i}", (1 + i, 2, 3), greedy(40)) for i in range(3)]
    for req in streams:
        core.add_request(req)
    for _ in range(3):
        core.step()  # the streams are decoding now
    long_prompt = random_prompts(1, SMALL.vocab_size, seed=5, min_len=200, max_len=200)[0]
    core.add_request(GenerateInput("long", tuple(long_prompt), greedy(3)))
    steps_to_first_token = 0
    while True:
        out = core.step()
        steps_to_first_token += 1
        emitted = {rid for rid, chunk in out if chunk.token_ids}
        assert {"s0", "s1", "s2"} <= emitted, "a decoding stream got no token in a prefill step"
        batch_tokens = sum(s.num_scheduled_tokens for s in core.scheduler.running if s.request_id == "long")
        assert batch_tokens <= 16 - 3
        if "long" in emitted:
            break
    assert steps_to_first_token == -(-200 // (16 - 3))  # 13 prompt tokens per step beside 3 decodes


def test_the_budget_counts_attention_so_late_chunks_are_smaller() -> None:
    """With `attention_context` A a prompt token fed at context c takes 1 + c / A of the step's budget:
    a long prompt's chunks shrink as its context grows, each within the budget, the streams beside it
    still get a token every step, and the prompt's first token is the one-shot prefill's."""
    budget, context = 16, 50.0
    core = make_core(MODEL, is_mtp=False, max_batch_tokens=budget, attention_context=context)
    streams = [GenerateInput(f"s{i}", (1 + i, 2, 3), greedy(60)) for i in range(3)]
    for req in streams:
        core.add_request(req)
    for _ in range(3):
        core.step()
    long_prompt = tuple(random_prompts(1, SMALL.vocab_size, seed=5, min_len=200, max_len=200)[0])
    core.add_request(GenerateInput("long", long_prompt, greedy(1)))
    chunks: list[tuple[int, int]] = []  # (context before the chunk, its tokens)
    while True:
        long = [s for s in (*core.scheduler.running, *core.scheduler.waiting) if s.request_id == "long"]
        start = long[0].num_computed_tokens if long else 0
        out = core.step()
        chunk = next((s.num_scheduled_tokens for s in core.scheduler.running if s.request_id == "long"), None)
        emitted = {rid for rid, c in out if c.token_ids}
        assert {"s0", "s1", "s2"} <= emitted, "a decoding stream got no token in a prefill step"
        if "long" in emitted:
            first = next(c.token_ids[0] for rid, c in out if rid == "long")
            break
        assert chunk is not None
        chunks.append((start, chunk))
    sizes = [n for _, n in chunks]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 2 * sizes[-1], sizes
    assert all(n == 1 or n * (1 + c / context) <= budget - 3 for c, n in chunks), chunks
    one_shot = make_core(MODEL, is_mtp=False)
    assert run_all(one_shot, [GenerateInput("long", long_prompt, greedy(1))])[("long", 0)][0].token_ids[0] == first


def test_a_token_multiple_grows_the_chunks_into_the_padding() -> None:
    """With `token_multiple` (the GPU engine pads prefill and mixed steps to a multiple of 64 tokens, to replay
    a graph) the prompt chunks grow into the padding rows: every prefill or mixed step holds a multiple of it
    unless all its prompts end in it, some go past the budget to get there, and the tokens stay the one-shot
    prefill's."""
    core = make_core(MODEL, is_mtp=False, max_batch_tokens=13, attention_context=0.0)
    core.scheduler.cfg = dataclasses.replace(core.scheduler.cfg, token_multiple=8)
    schedule, steps = core.scheduler.schedule, []

    def recording():
        batch = schedule()
        if batch is not None and batch.is_prefill:
            total = sum(s.num_scheduled_tokens for s in batch.seqs)
            steps.append(
                (total, all(s.num_computed_tokens + s.num_scheduled_tokens >= s.num_tokens for s in batch.seqs))
            )
        return batch

    core.scheduler.schedule = recording
    assert tokens(core) == tokens(make_core(MODEL, is_mtp=False))
    assert all(total % 8 == 0 or all_end for total, all_end in steps), steps
    assert any(total > 13 for total, _ in steps) and sum(not all_end for _, all_end in steps) > 5, steps
