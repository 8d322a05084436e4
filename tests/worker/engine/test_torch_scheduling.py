"""Continuous batching over the paged cache: prefix sharing, n > 1, eviction, preemption, abort."""

from __future__ import annotations

from services.worker.engine_api import GenerateInput
from tests.support.torch_engine import (
    SMALL,
    greedy,
    make_core,
    random_model,
    random_prompts,
    run_all,
    tokens_of,
)

MODEL = random_model()
PROMPT = tuple(range(1, 19))  # 4 full blocks of 4 and 2 tokens more


def test_n_samples_share_the_prompt_blocks_by_reference_count() -> None:
    core = make_core(MODEL)
    core.add_request(GenerateInput("g", PROMPT, greedy(4, n=4)))
    chunks = core.step()  # the prefill of all four samples
    assert [c.index for _, c in chunks] == [0, 1, 2, 3]
    tables = [s.block_table for s in core.scheduler.running]
    assert all(t[:4] == tables[0][:4] for t in tables)  # the full prompt blocks are shared...
    assert all(core.blocks.blocks[b].ref_count == 4 for b in tables[0][:4])
    assert len({t[4] for t in tables}) == 4  # ...the partial last block is each sample's own
    assert [c.cached_tokens for _, c in chunks] == [0, 16, 16, 16]
    assert core.blocks.num_used_tokens == (4 + 4) * 4
    # Samples 1-3 read blocks whose KV sample 0 wrote in that same forward: greedy, all four agree with n=1.
    rest = run_all(core, [])
    single = run_all(make_core(MODEL), [GenerateInput("one", PROMPT, greedy(4))])[("one", 0)]
    for index in range(4):
        assert [chunks[index][1].token_ids[0], *tokens_of(rest[("g", index)])] == tokens_of(single)


def test_a_later_request_reuses_a_finished_prefix_and_answers_the_same() -> None:
    fresh = run_all(make_core(MODEL), [GenerateInput("b", (*PROMPT, 50, 51), greedy(6))])
    core = make_core(MODEL)
    run_all(core, [GenerateInput("a", PROMPT, greedy(6))])
    assert core.blocks.num_used_tokens == 0  # finished: every block back in the pool, content still cached
    again = run_all(core, [GenerateInput("b", (*PROMPT, 50, 51), greedy(6))])
    assert again[("b", 0)][0].cached_tokens == 16 and core.blocks.hit_rate > 0
    assert tokens_of(again[("b", 0)]) == tokens_of(fresh[("b", 0)])


def test_a_fully_cached_prompt_still_recomputes_its_last_token() -> None:
    prompt = PROMPT[:16]  # exactly four blocks
    fresh = tokens_of(run_all(make_core(MODEL), [GenerateInput("x", prompt, greedy(5))])[("x", 0)])
    core = make_core(MODEL)
    run_all(core, [GenerateInput("x", prompt, greedy(5))])
    second = run_all(core, [GenerateInput("y", prompt, greedy(5))])[("y", 0)]
    assert second[0].cached_tokens == 16 and tokens_of(second) == fresh


def test_least_recently_freed_blocks_are_evicted_first() -> None:
    core = make_core(MODEL, num_blocks=16)
    run_all(core, [GenerateInput("old", PROMPT, greedy(2))])
    others = [tuple(range(30 + 10 * i, 48 + 10 * i)) for i in range(4)]
    for i, prompt in enumerate(others):  # 4 x 5 blocks through a 16-block pool, one after another
        run_all(core, [GenerateInput(f"o{i}", prompt, greedy(2))])
    newest = run_all(core, [GenerateInput("o3b", others[-1], greedy(2))])
    assert newest[("o3b", 0)][0].cached_tokens == 16
    oldest = run_all(core, [GenerateInput("old2", PROMPT, greedy(2))])
    assert oldest[("old2", 0)][0].cached_tokens == 0


def test_a_full_kv_cache_preempts_and_recomputes_instead_of_failing() -> None:
    prompts = random_prompts(12, SMALL.vocab_size, seed=7, min_len=8, max_len=20)
    requests = [GenerateInput(f"r{i}", tuple(p), greedy(24)) for i, p in enumerate(prompts)]
    roomy = run_all(make_core(MODEL), requests)
    for is_mtp in (False, True):
        core = make_core(MODEL, num_blocks=24, is_mtp=is_mtp)  # 96 tokens for 12 x ~40
        tight = run_all(core, requests)
        assert {k: tokens_of(v) for k, v in tight.items()} == {k: tokens_of(v) for k, v in roomy.items()}
        assert core.scheduler.num_preemptions > 0 and core.blocks.num_used_tokens == 0
        assert all(v[-1].finish_reason == "length" for v in tight.values())


def test_abort_frees_the_request_blocks_and_ends_each_sample() -> None:
    core = make_core(MODEL)
    core.add_request(GenerateInput("keep", (7, 8, 9), greedy(100)))
    core.add_request(GenerateInput("drop", PROMPT, greedy(100, n=2)))
    for _ in range(3):
        core.step()
    before = core.blocks.num_used_tokens
    ended = core.abort_request("drop")
    assert [(rid, c.index, c.finish_reason) for rid, c in ended] == [("drop", 0, "abort"), ("drop", 1, "abort")]
    assert 0 < core.blocks.num_used_tokens < before
    assert core.abort_request("drop") == []
    core.abort_request("keep")
    assert core.blocks.num_used_tokens == 0 and not core.has_work


def test_max_new_tokens_zero_ends_at_once() -> None:
    out = run_all(make_core(MODEL), [GenerateInput("z", (1, 2), greedy(0))])
    (chunk,) = out[("z", 0)]
    assert chunk.finished and chunk.finish_reason == "length" and chunk.output_ids == ()
