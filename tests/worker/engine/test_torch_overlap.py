"""Overlapped decode (a step launched on the device's tokens before the host reads them) against the plain
engine: same tokens, finish reasons and block accounting, with stops, aborts and arrivals mid-flight.

On CPU nothing runs asynchronously, so these tests check the bookkeeping (positions one ahead, dropped rows
of finished or aborted sequences, slots, draining when the batch changes); the timing gain is the GPU bench's.
"""

from __future__ import annotations

from services.worker.engine_api import GenerateInput, SamplingConfig
from tests.support.torch_engine import SMALL, greedy, make_core, random_model, random_prompts, run_all, tokens_of

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
    return {
        key: (tokens_of(chunks), chunks[-1].finish_reason, chunks[-1].completion_tokens, chunks[-1].logprobs)
        for key, chunks in run_all(core, reqs).items()
    }


def test_overlapped_decode_emits_what_the_plain_engine_emits() -> None:
    reference = summary(make_core(MODEL, is_mtp=False, overlap_decode=False), requests())
    core = make_core(MODEL, is_mtp=False, overlap_decode=True)
    assert summary(core, requests()) == reference
    assert reference[("stop", 0)][1] == "stop"  # the stop token really cut that stream short
    assert core.blocks.num_free_blocks == core.blocks.num_blocks  # every block came back
    # Only the greedy streams, one at a time, with a step ahead the whole way:
    for i in range(3):
        solo = make_core(MODEL, is_mtp=False, overlap_decode=True)
        solo.add_request(GenerateInput("solo", (1, 2, 3 + i), greedy(10)))
        solo.step()  # prefill
        solo.step()
        assert solo._inflight is not None, "no decode step was launched ahead"


def test_an_abort_or_an_arrival_while_a_step_is_in_flight() -> None:
    prompts = random_prompts(3, SMALL.vocab_size, seed=22)
    reference = summary(
        make_core(MODEL, is_mtp=False, overlap_decode=False),
        [GenerateInput(f"r{i}", tuple(p), greedy(20)) for i, p in enumerate(prompts)],
    )
    core = make_core(MODEL, is_mtp=False, overlap_decode=True)
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
