"""Overlapped decode (a step launched on the device's tokens before the host reads them) against the plain
engine: same tokens, finish reasons and block accounting, with stops, aborts and arrivals mid-flight.

On CPU nothing runs asynchronously, so these tests check the bookkeeping (positions one ahead, dropped rows
of finished or aborted sequences, slots, draining when the batch changes); the timing gain is the GPU bench's.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from services.worker.engine_api import GenerateInput, SamplingConfig
from services.worker.model import load_mimo
from services.worker.model.mimo import MiMoForCausalLM
from tests.support.tokenizer_dirs import TINY_MIMO
from tests.support.torch_engine import (
    SMALL,
    greedy,
    make_core,
    random_model,
    random_prompts,
    run_all,
    tiny_chat_prompts,
    tokens_of,
)

MODEL = random_model()


def requests() -> list[GenerateInput]:
    prompts = random_prompts(6, SMALL.vocab_size, seed=21)
    reqs = [GenerateInput(f"g{i}", tuple(p), greedy(3 + 4 * i)) for i, p in enumerate(prompts)]
    # A stop token cuts one stream short of its budget (its 6th greedy token); a seeded sample decodes on
    # the device too.
    free = run_all(make_core(MODEL, is_mtp=False), [GenerateInput("free", tuple(prompts[5]), greedy(30))])
    stop_id = tokens_of(free[("free", 0)])[5]
    reqs.append(GenerateInput("stop", tuple(prompts[5]), greedy(30, stop_token_ids=(stop_id,))))
    seeded = SamplingConfig(temperature=0.9, top_p=0.8, max_new_tokens=12, seed=7)
    reqs.append(GenerateInput("seeded", tuple(prompts[1]), seeded))
    # Logprobs and penalties need the host's tokens: those steps are not overlapped, still right.
    reqs.append(GenerateInput("logprob", tuple(prompts[2]), greedy(6), return_logprob=True, top_logprobs_num=2))
    reqs.append(GenerateInput("penalty", tuple(prompts[3]), greedy(8, repetition_penalty=1.3)))
    return reqs


def summary(core, reqs) -> dict:
    """Per sample: tokens, finish reason, completion count and logprobs, whatever the chunking (MTP: 1-2 a step)."""
    return {
        key: (
            tokens_of(chunks),
            chunks[-1].finish_reason,
            chunks[-1].completion_tokens,
            [lp for c in chunks for lp in c.logprobs],
        )
        for key, chunks in run_all(core, reqs).items()
    }


def engine(is_mtp: bool, overlap: bool, policy: str = "auto"):
    core = make_core(MODEL, is_mtp=is_mtp, overlap_decode=overlap)
    core.runner.spec_policy.mode = policy
    return core


@pytest.mark.parametrize(("is_mtp", "policy"), [(False, "auto"), (True, "always"), (True, "auto"), (True, "never")])
def test_overlapped_decode_emits_what_the_plain_engine_emits(is_mtp: bool, policy: str) -> None:
    """MTP "auto" switches between MTP and plain steps on measured costs, the step ahead in the other mode."""
    reference = summary(engine(is_mtp, False, policy), requests())
    core = engine(is_mtp, True, policy)
    assert summary(core, requests()) == reference
    assert reference[("stop", 0)][1] == "stop"  # the stop token really cut that stream short
    assert core.blocks.num_free_blocks == core.blocks.num_blocks  # every block came back
    if is_mtp and policy != "never":
        assert core.num_draft_tokens > 0
    # One greedy stream at a time: a step is launched ahead once it decodes.
    for i in range(3):
        solo = engine(is_mtp, True, "always" if policy == "auto" else policy)
        solo.add_request(GenerateInput("solo", (1, 2, 3 + i), greedy(10)))
        solo.step()  # prefill
        solo.step()
        assert solo._inflight is not None, "no decode step was launched ahead"
        assert solo._inflight.is_spec == (is_mtp and policy != "never")


@pytest.mark.parametrize("is_mtp", [False, True])
def test_an_abort_or_an_arrival_while_a_step_is_in_flight(is_mtp: bool) -> None:
    prompts = random_prompts(3, SMALL.vocab_size, seed=22)
    reference = summary(
        engine(False, False), [GenerateInput(f"r{i}", tuple(p), greedy(20)) for i, p in enumerate(prompts)]
    )
    core = engine(is_mtp, True, "always")
    got: dict[str, list[int]] = {}
    for i, p in enumerate(prompts[:2]):
        core.add_request(GenerateInput(f"r{i}", tuple(p), greedy(20)))
    for _ in range(4):
        for rid, chunk in core.step():
            got.setdefault(rid, []).extend(chunk.token_ids)
    assert core._inflight is not None
    aborted = core.abort_request("r1")
    assert [c.finish_reason for _, c in aborted] == ["abort"]
    core.add_request(GenerateInput("r2", tuple(prompts[2]), greedy(20)))  # arrives mid-flight
    emitted_after_abort = []
    while core.has_work:
        for rid, chunk in core.step():
            got.setdefault(rid, []).extend(chunk.token_ids)
            emitted_after_abort.append(rid)
    assert "r1" not in emitted_after_abort  # the in-flight row of the aborted request was dropped
    assert got["r0"] == reference[("r0", 0)][0]
    assert got["r2"] == reference[("r2", 0)][0]
    assert got["r1"] == reference[("r1", 0)][0][: len(got["r1"])]
    assert core.blocks.num_free_blocks == core.blocks.num_blocks


def tiny_requests(max_new_tokens: int) -> tuple[MiMoForCausalLM, list[GenerateInput], dict[tuple[str, int], list[int]]]:
    """Tiny MiMo (fp32, CPU), three chat-ish greedy requests and the plain engine's tokens for them."""
    model = load_mimo(TINY_MIMO, "cpu", torch.float32)
    reqs = [GenerateInput(f"t{i}", p, greedy(max_new_tokens)) for i, p in enumerate(tiny_chat_prompts())]
    plain = {key: tokens_of(chunks) for key, chunks in run_all(make_core(model, is_mtp=False), reqs).items()}
    return model, reqs, plain


def test_overlapped_mtp_on_the_trained_tiny_model_accepts_and_keeps_the_greedy_tokens() -> None:
    """The random model above rarely accepts a draft; tiny MiMo accepts about half on these prompts, so both
    of a step ahead's cases (prev accepted: bonus token two positions on; rejected: the correction) run."""
    model, reqs, plain = tiny_requests(24)
    core = make_core(model, is_mtp=True, overlap_decode=True)
    core.runner.spec_policy.mode = "always"
    assert {key: tokens_of(chunks) for key, chunks in run_all(core, reqs).items()} == plain
    assert 0 < core.num_accepted_tokens < core.num_draft_tokens


@pytest.mark.parametrize("is_mtp", [False, True])
def test_the_step_ahead_continues_for_the_others_when_a_stream_finishes(is_mtp: bool) -> None:
    prompts = random_prompts(5, SMALL.vocab_size, seed=23)
    reqs = [GenerateInput(f"r{i}", tuple(p), greedy(4 + 3 * i)) for i, p in enumerate(prompts)]
    reference = summary(engine(False, False), reqs)
    core = engine(is_mtp, True, "always")
    for req in reqs:
        core.add_request(req)
    got: dict[str, list[int]] = {}
    finished_while_others_ran = 0
    while core.has_work:
        out = core.step()
        for rid, chunk in out:
            got.setdefault(rid, []).extend(chunk.token_ids)
        if any(c.finished for _, c in out) and core.scheduler.running:
            finished_while_others_ran += 1
            assert core._inflight is not None, "the overlap stopped when one stream finished"
    assert finished_while_others_ran >= 3
    assert {(rid, 0): toks for rid, toks in got.items()} == {k: v[0] for k, v in reference.items()}


def test_mtp_policy_times_each_overlapped_step_by_one_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cost the MTP policy records holds one step's forward. Each forward here takes at least 5 ms (a
    sleep), so no sample may be shorter: before, a drained step (read with nothing launched in its period)
    was recorded at ~0.2 ms, and an overlapped host-bound step at its launch's neighbour's cost. (Now a
    period's time is split over the steps launched in it, and a drained read's joins the next period.)"""
    import time

    core = engine(True, True)
    policy = core.runner.spec_policy
    policy.probe_every = policy.max_probe_every = 3  # switch often: the periods around a switch are not timed
    backbone = core.runner.backbone
    monkeypatch.setattr(core.runner, "backbone", lambda *a, **kw: (time.sleep(0.005), backbone(*a, **kw))[1])
    prompts = random_prompts(4, SMALL.vocab_size, seed=5)
    run_all(core, [GenerateInput(f"r{i}", tuple(p), greedy(40)) for i, p in enumerate(prompts)])
    samples = core.runner.spec_policy.samples
    assert {is_spec for is_spec, _ in samples} == {True, False}  # both modes were timed
    shortest = min(min(v) for v in samples.values())
    assert shortest >= 0.005, f"a recorded step cost of {shortest * 1e3:.2f} ms holds no forward"


def test_switches_between_mtp_and_plain_steps_stay_overlapped() -> None:
    """A switch of the MTP policy launches the other mode's step on the device's results of the last, with no
    drain: a plain step after an MTP step feeds the last token it emitted (one position back where it rejected
    its draft); an MTP step after a plain step verifies a placeholder draft (the token itself). The policy
    flips here every few steps (probes every 2 choices); the tokens stay the plain engine's, and the step
    ahead is never missing while every stream has room for it."""
    model, reqs, plain = tiny_requests(40)
    core = make_core(model, is_mtp=True, overlap_decode=True)
    policy = core.runner.spec_policy
    policy.probe_every = policy.max_probe_every = 2
    for req in reqs:
        core.add_request(req)
    got: dict[tuple[str, int], list[int]] = {}
    modes = []
    for step in itertools.count():
        if not core.has_work:
            break
        for rid, chunk in core.step():
            got.setdefault((rid, chunk.index), []).extend(chunk.token_ids)
        running = core.scheduler.running
        if step > 0 and running and all(s.num_output_tokens + 4 <= 40 for s in running):  # step 0: the prefill
            assert core._inflight is not None, "a switch drained the overlap"
            modes.append(core._inflight.is_spec)
    switches = list(itertools.pairwise(modes))
    assert switches.count((True, False)) >= 2 and switches.count((False, True)) >= 2, modes
    assert got == plain
    assert 0 < core.num_accepted_tokens < core.num_draft_tokens
