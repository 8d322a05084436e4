"""MTP speculative decoding: greedy output is unchanged, the MTP cache stays current, sampling keeps p."""

from __future__ import annotations

import pytest
import torch

from services.worker.engine_api import GenerateInput, SamplingConfig
from services.worker.engines.torch import mtp, sampler
from services.worker.engines.torch.core import EngineCore
from services.worker.engines.torch.spec_policy import SpecPolicy
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


def greedy_requests(prompts: list[list[int]]) -> list[GenerateInput]:
    return [GenerateInput(f"r{i}", tuple(p), greedy(8 + i % 17)) for i, p in enumerate(prompts)]


def outputs(core: EngineCore, requests: list[GenerateInput]) -> dict[str, list[int]]:
    return {rid: tokens_of(chunks) for (rid, _), chunks in run_all(core, requests).items()}


def test_greedy_output_with_mtp_equals_without_for_60_prompts() -> None:
    prompts = random_prompts(50, SMALL.vocab_size, seed=1)
    shared = prompts[0][:3] * 4  # some prompts share block-aligned prefixes: prefix-cache hits too
    prompts += [shared + p for p in random_prompts(10, SMALL.vocab_size, seed=2)]
    plain = outputs(make_core(MODEL, is_mtp=False), greedy_requests(prompts))
    core = make_core(MODEL, is_mtp=True)
    speculative = outputs(core, greedy_requests(prompts))
    assert speculative == plain
    assert len(plain) == 60 and all(len(v) == 8 + i % 17 for i, v in enumerate(plain.values()))
    assert core.num_draft_tokens > 0 and core.blocks.hit_rate > 0


def dense_draft(tokens: list[int]) -> int:
    """The MTP layer's draft for the token after tokens[-1], recomputed from scratch without any cache."""
    with torch.no_grad():
        ids, pos = torch.tensor([tokens]), torch.arange(len(tokens))
        hidden = MODEL(ids, pos)
        mtp_hidden = MODEL.mtp_forward(hidden[:, :-1], ids[:, 1:], pos[:-1])  # (h_t, x_t+1) predicts x_t+2
        return int(MODEL.compute_logits(mtp_hidden[0, -1]).argmax())


def run_checking_drafts(
    prompts: list[list[int]], oracle: dict[str, list[int]] | None
) -> tuple[EngineCore, dict[str, list[int]]]:
    """Step an MTP engine; after every step each draft must equal the dense MTP's. With an oracle,
    replace the drafts by the right next tokens (so every verification accepts)."""
    core = make_core(MODEL, is_mtp=True)
    core.runner.spec_policy.mode = "always"  # every decode step drafts (the per-step policy is tested apart)
    out: dict[str, list[int]] = {}
    for req in greedy_requests(prompts):
        core.add_request(req)
    while core.has_work:
        for rid, chunk in core.step():
            out.setdefault(rid, []).extend(chunk.token_ids)
        for seq in core.scheduler.running:
            assert seq.draft_token == dense_draft(seq.token_ids), "the MTP KV cache fell behind"
            want = None if oracle is None else oracle[seq.request_id]
            if want is not None and seq.num_output_tokens < len(want):
                seq.draft_token = want[seq.num_output_tokens]
    return core, out


def test_mtp_cache_is_brought_up_to_date_after_rejected_and_accepted_drafts() -> None:
    prompts = random_prompts(6, SMALL.vocab_size, seed=3, min_len=2)
    plain = outputs(make_core(MODEL, is_mtp=False), greedy_requests(prompts))
    core, rejected = run_checking_drafts(prompts, oracle=None)
    assert rejected == plain and core.num_accepted_tokens < core.num_draft_tokens
    core, accepted = run_checking_drafts(prompts, oracle=plain)
    assert accepted == plain
    load = core.load()
    assert load.spec_accept_rate == 1.0 and load.spec_accept_length == 2.0


def test_the_last_chunk_reports_draft_and_accepted_counts() -> None:
    core = make_core(MODEL, is_mtp=True)
    core.runner.spec_policy.mode = "always"
    chunks = run_all(core, [GenerateInput("a", (1, 2, 3), greedy(12))])[("a", 0)]
    last = chunks[-1]
    assert last.finished and last.spec_draft_tokens >= 6 and 0 <= last.spec_accepted_tokens <= last.spec_draft_tokens
    assert all(c.spec_draft_tokens == 0 for c in chunks[:-1])
    assert last.spec_draft_tokens + last.spec_accepted_tokens == 12 - 1  # the first token came from prefill


def test_policy_drafts_only_when_it_emits_more_tokens_per_second() -> None:
    policy = SpecPolicy(min_samples=2, probe_every=1000, window=3)
    chosen = []
    for _ in range(4):  # nothing measured: each mode in one run of two timed steps, MTP first
        chosen.append(policy.should_draft(8))
        policy.record(8, chosen[-1], 0.010 if chosen[-1] else 0.006, acceptance=0.9 if chosen[-1] else None)
    assert chosen == [True, True, False, False]
    # acceptance ~0.997 after two drafts at 0.9: 2 tokens / 10 ms beats 1 token / 6 ms
    assert policy.should_draft(8)
    policy.record(8, False, 0.0055)  # plain gets cheaper (median 6 ms): 1.96 / 10 ms still beats it
    assert policy.should_draft(8)
    policy.record(8, False, 0.004)
    policy.record(8, False, 0.004)  # the last three plain steps: median 4 ms, 1 / 4 ms beats 1.96 / 10 ms
    assert not policy.should_draft(8)
    for _ in range(30):
        policy.record(8, True, 0.010, acceptance=0.1)  # drafts stop being accepted
    assert not policy.should_draft(8)
    assert policy.should_draft(1)  # another batch size is measured on its own


def test_policy_is_not_fooled_by_one_slow_step() -> None:
    """A noisy first plain step (another process, a first run of a shape) must not keep MTP on for good."""
    policy = SpecPolicy(min_samples=3, probe_every=4, probe_steps=2)
    for _ in range(3):
        policy.record(64, True, 0.020, acceptance=0.9)  # MTP: 1.9 tokens per 20 ms
    policy.record(64, False, 0.050)  # plain, slowed once by noise
    policy.record(64, False, 0.008)  # plain's real cost: 1 token per 8 ms wins
    policy.record(64, False, 0.009)
    choices = [policy.should_draft(64) for _ in range(24)]
    # Only the probes draft, two steps each, after 4 plain choices, then after 16 (the choice held).
    assert "".join("M" if c else "." for c in choices) == "...MM...............MM.."


def test_policy_probes_again_soon_after_its_choice_flips() -> None:
    """A probe that finds the other mode now better switches to it, and the next probe comes after
    `probe_every` choices again, not after the backed-off interval."""
    policy = SpecPolicy(min_samples=1, probe_every=2, probe_steps=1, probe_backoff=2, window=1)
    policy.record(8, True, 0.020, acceptance=0.9)
    policy.record(8, False, 0.008)  # plain wins: 1 / 8 ms against 1.9 / 20 ms
    assert [policy.should_draft(8) for _ in range(6)] == [False, True, False, False, False, True]
    policy.record(8, True, 0.010)  # MTP got cheaper: 1.9 / 10 ms wins
    assert [policy.should_draft(8) for _ in range(3)] == [True, False, True]


def test_policy_does_not_flip_between_even_modes() -> None:
    """MTP at 1.9 tokens per ~19 ms against plain's 1 per 10 ms: even, so the mode changes only past the margin."""
    policy = SpecPolicy(min_samples=1, probe_every=1000, window=1)
    policy.record(8, True, 0.0185)
    policy.record(8, False, 0.010)
    policy.acceptance = 0.9
    choices = []
    for mtp_ms in (18.5, 19.4, 19.9, 20.4, 18.5, 17.5):  # MTP's emitted tokens/s over plain's: +2.7% ... +8.6%
        policy.record(8, True, mtp_ms / 1e3)
        choices.append(policy.should_draft(8))
    # +2.7% drafts; -2.1% and -4.5% keep drafting; -6.9% switches; +2.7% stays plain; +8.6% switches back.
    assert choices == [True, True, True, False, False, True]


def test_each_draft_weighs_the_same_in_the_acceptance() -> None:
    """At batch 1 a step verifies one draft: four rejected in a row (common at an acceptance of 0.6) must not
    flip MTP off, and one step of 64 sequences moves the acceptance as far as 64 steps of one."""
    policy, single = (SpecPolicy(min_samples=1, probe_every=1000, window=1) for _ in range(2))
    for p in (policy, single):
        p.record(1, True, 0.012)  # MTP 1.6 tokens / 12 ms against plain's 1 / 9 ms: 1.2x
        p.record(1, False, 0.009)
        p.acceptance = 0.6
    for _ in range(4):
        assert policy.should_draft(1)
        policy.record(1, True, 0.012, acceptance=0.0, num_drafts=1)
    assert policy.should_draft(1), policy.acceptance
    single.acceptance = policy.acceptance
    for _ in range(64):
        single.record(1, True, None, acceptance=0.0, num_drafts=1)
    policy.record(64, True, None, acceptance=0.0, num_drafts=64)
    assert policy.acceptance == pytest.approx(single.acceptance, rel=1e-9)
    assert not policy.should_draft(1), policy.acceptance  # 1.21 / 12 ms loses to 1 / 9 ms


def test_plain_steps_in_an_mtp_engine_keep_greedy_tokens_and_count_no_drafts() -> None:
    prompts = random_prompts(8, SMALL.vocab_size, seed=4)
    plain = outputs(make_core(MODEL, is_mtp=False), greedy_requests(prompts))
    core = make_core(MODEL, is_mtp=True)
    core.runner.spec_policy.mode = "never"
    assert outputs(core, greedy_requests(prompts)) == plain
    assert core.num_draft_tokens == 0 and core.load().spec_accept_rate == 0.0
    mixed = make_core(MODEL, is_mtp=True)
    policy = mixed.runner.spec_policy
    policy.probe_every = policy.max_probe_every = 2  # flip modes often: stale MTP KV must never change a token
    assert outputs(mixed, greedy_requests(prompts)) == plain
    assert mixed.runner.spec_policy.num_plain_steps > 0 and mixed.num_draft_tokens > 0


def test_prefill_runs_the_mtp_layer_only_where_the_policy_drafts() -> None:
    """Where the policy has chosen plain steps at the batch size a prompt joins, its prefill skips the MTP
    layer (no first draft); where it drafts, or has not measured yet, the prefill drafts. Tokens stay greedy."""
    from services.worker.engines.torch.cuda_graphs import batch_bucket

    prompts = random_prompts(4, SMALL.vocab_size, seed=8)
    for chosen in (None, True, False):
        core = make_core(MODEL, is_mtp=True)
        if chosen is not None:
            core.runner.spec_policy.current[batch_bucket(1)] = chosen
        core.add_request(GenerateInput("a", tuple(prompts[0]), greedy(4)))
        core.step()  # the prefill
        seq = core.scheduler.running[0]
        assert (seq.draft_token is not None) == (chosen is not False), chosen
    plain = outputs(make_core(MODEL, is_mtp=False), greedy_requests(prompts))
    core = make_core(MODEL, is_mtp=True)
    policy = core.runner.spec_policy
    for bucket in {batch_bucket(n) for n in range(1, 5)}:  # plain measured 10x cheaper at every batch size
        for _ in range(policy.min_samples):
            policy.record(bucket, True, 0.010, acceptance=0.9)
            policy.record(bucket, False, 0.001)
        policy.current[bucket] = False
    assert outputs(core, greedy_requests(prompts)) == plain


def test_rejection_sampling_keeps_the_target_distribution() -> None:
    torch.manual_seed(0)
    vocab, rows = 6, 200_000
    p = torch.softmax(torch.randn(vocab) * 1.5, -1)
    q = torch.softmax(torch.randn(vocab) * 1.5, -1)
    logits = torch.stack([p.log(), p.log()])[None].expand(rows, 2, vocab)  # target at both positions
    sampled = SamplingConfig(temperature=1.0)
    settings = sampler.SamplingRows(
        temperature=torch.ones(2 * rows), is_greedy=torch.zeros(2 * rows, dtype=torch.bool),
        top_k=torch.full((2 * rows,), vocab), top_p=torch.ones(2 * rows), min_p=torch.zeros(2 * rows),
        generators=(None,) * (2 * rows), is_all_greedy=sampled.is_greedy, has_filters=False,
    )  # fmt: skip
    drafts = torch.multinomial(q, rows, replacement=True)
    tokens, accepted = mtp.verify(logits, drafts, q.expand(rows, vocab), settings)
    first = torch.bincount(tokens[:, 0], minlength=vocab).float() / rows
    assert (first - p).abs().max().item() < 0.005  # the emitted token follows p, not q
    assert abs(accepted.float().mean().item() - torch.minimum(p, q).sum().item()) < 0.005


def test_sampled_tokens_with_mtp_follow_the_model_distribution() -> None:
    prompt, temperature, num = [5, 17, 33, 2], 0.7, 4000
    with torch.no_grad():  # exact distribution of the second output token, over every first token
        p1 = torch.softmax(
            MODEL.compute_logits(MODEL(torch.tensor([prompt]), torch.arange(4)))[0, -1] / temperature, -1
        )
        seqs = torch.cat([torch.tensor(prompt).expand(SMALL.vocab_size, 4), torch.arange(SMALL.vocab_size)[:, None]], 1)
        p2 = torch.softmax(MODEL.compute_logits(MODEL(seqs, torch.arange(5)))[:, -1] / temperature, -1)
        exact = p1 @ p2
    s = SamplingConfig(temperature=temperature, max_new_tokens=3, n=50, ignore_eos=True)
    core = make_core(MODEL, is_mtp=True, num_blocks=4096, max_running_requests=512)
    runs = run_all(core, [GenerateInput(f"s{i}", tuple(prompt), s) for i in range(num // 50)])
    second = torch.tensor([tokens_of(c)[1] for c in runs.values()])
    observed, expected = torch.bincount(second, minlength=SMALL.vocab_size).float(), exact * num  # >= 14 per cell
    chi2 = ((observed - expected) ** 2 / expected).sum().item()
    assert chi2 < 170  # 96 degrees of freedom: mean 96, sd 14; emitting drafts unchecked gives ~1000
    assert core.num_accepted_tokens < core.num_draft_tokens  # rejections happened (and were resampled)


def test_a_seed_fixes_the_samples_whatever_runs_beside_them() -> None:
    s = SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=10, seed=1234)
    alone = run_all(make_core(MODEL), [GenerateInput("x", (3, 4, 5), s)])
    crowd = [GenerateInput(f"o{i}", (9, i), SamplingConfig(temperature=1.0, max_new_tokens=10)) for i in range(5)]
    crowded = run_all(make_core(MODEL), [*crowd, GenerateInput("x", (3, 4, 5), s)])
    assert tokens_of(alone[("x", 0)]) == tokens_of(crowded[("x", 0)])
