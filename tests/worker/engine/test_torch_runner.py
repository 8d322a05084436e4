"""The paged runner computes the same logits as transformers' Qwen2ForCausalLM (fp32, CPU)."""

from __future__ import annotations

import torch

from bench.engine import as_hf
from services.worker.engine_api import SamplingConfig
from services.worker.engines.torch.block_manager import BlockManager
from services.worker.engines.torch.model_runner import ModelRunner
from services.worker.engines.torch.sequence import Sequence
from services.worker.engines.torch.stop import StopChecker
from tests.support.torch_engine import SMALL, random_model

BLOCK = 4


def make_seq(seq_id: int, tokens: list[int]) -> Sequence:
    s = SamplingConfig(temperature=0.0, max_new_tokens=16)
    return Sequence(seq_id, f"r{seq_id}", 0, list(tokens), len(tokens), s, 16, StopChecker.build(s, (), 16, None))


def hf_logits(hf, tokens: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf(torch.tensor([tokens])).logits[0]  # [T, V]


def run_pending(runner: ModelRunner, seqs: list[Sequence]) -> list[torch.Tensor]:
    """One forward over each sequence's pending tokens; their logits, per sequence."""
    pending = [s.pending_tokens() for s in seqs]
    with torch.no_grad():
        logits = runner.logits(runner.forward(runner.prepare(seqs, pending)))
    out, start = [], 0
    for toks, seq in zip(pending, seqs, strict=True):
        out.append(logits[start : start + len(toks)])
        start += len(toks)
        seq.num_computed_tokens = seq.num_tokens
    return out


def test_prefill_and_decode_logits_match_transformers_qwen2() -> None:
    model = random_model()
    hf = as_hf(model)
    runner, blocks = ModelRunner(model, BLOCK, 64), BlockManager(64, BLOCK)
    gen = torch.Generator().manual_seed(3)
    seqs = [
        make_seq(i, torch.randint(0, SMALL.vocab_size, (n,), generator=gen).tolist()) for i, n in enumerate((11, 6, 17))
    ]
    for s in seqs:
        blocks.allocate(s)
    # A ragged prefill batch: every position's logits match.
    for seq, ours in zip(seqs, run_pending(runner, seqs), strict=True):
        assert (ours - hf_logits(hf, seq.token_ids)).abs().max().item() < 1e-4
    # Decode steps, one token per sequence, context growing across block boundaries.
    for _ in range(5):
        for seq in seqs:
            seq.token_ids.append(int(hf_logits(hf, seq.token_ids)[-1].argmax()))
            assert blocks.ensure_slots(seq, seq.num_tokens)
        for seq, ours in zip(seqs, run_pending(runner, seqs), strict=True):
            assert ours.shape[0] == 1
            assert (ours[0] - hf_logits(hf, seq.token_ids)[-1]).abs().max().item() < 1e-4


def test_a_prefix_cache_hit_feeds_only_the_new_tokens_and_matches() -> None:
    model = random_model()
    hf = as_hf(model)
    runner, blocks = ModelRunner(model, BLOCK, 64), BlockManager(64, BLOCK)
    shared = list(range(5, 17))  # three full blocks
    first = make_seq(0, [*shared, 40, 41])
    blocks.allocate(first)
    blocks.mark_ready(first, first.num_tokens)  # what the scheduler does when it schedules the prompt
    run_pending(runner, [first])
    second = make_seq(1, [*shared, 60, 61, 62])
    blocks.allocate(second)
    assert second.num_computed_tokens == len(shared) and second.block_table[:3] == first.block_table[:3]
    (ours,) = run_pending(runner, [second])
    assert ours.shape[0] == 3
    assert (ours - hf_logits(hf, second.token_ids)[-3:]).abs().max().item() < 1e-4


def test_prepare_lays_each_token_out_by_its_block_table() -> None:
    """A ragged step (a prompt's second chunk beside a new prompt) and a decode step launched ahead: each
    token's position and cache slot follow its own sequence's block table, and the shorter tables are padded
    with the scratch block (what the kernels and the exact path both read)."""
    runner, blocks = ModelRunner(random_model(), BLOCK, 64), BlockManager(64, BLOCK)
    blocks.allocate(make_seq(9, list(range(40, 47))))  # other blocks taken first: tables are not 0, 1, 2 ...
    long, short = make_seq(0, list(range(3, 13))), make_seq(1, [7, 8])
    for s in (long, short):
        blocks.allocate(s)
    long.num_computed_tokens = 6  # its first chunk is in the cache
    slot = lambda s, p: s.block_table[p // BLOCK] * BLOCK + p % BLOCK  # noqa: E731
    step = runner.prepare([long, short], [long.token_ids[6:], short.token_ids])
    assert step.input_ids.tolist() == [9, 10, 11, 12, 7, 8]
    assert step.positions.tolist() == [6, 7, 8, 9, 0, 1]
    assert step.slot_mapping.tolist() == [slot(long, p) for p in range(6, 10)] + [slot(short, p) for p in (0, 1)]
    assert step.block_tables.tolist() == [long.block_table, short.block_table + [runner.scratch_block] * 2]
    # One token each, two positions past the host's view (`launch_decode` after an MTP step).
    long.num_computed_tokens, short.num_computed_tokens = 9, 1
    assert blocks.ensure_slots(long, 12) and blocks.ensure_slots(short, 4)
    step = runner.prepare([long, short], [[1], [2]], ahead=2)
    assert step.positions.tolist() == [11, 3]
    assert step.slot_mapping.tolist() == [slot(long, 11), slot(short, 3)]
    assert step.max_query_len == 1 and step.query_start is None
