"""Greedy token ids of our engine against vLLM's CPU build on the tiny MiMo, MTP off and on, fp32.

Opt-in: needs the vLLM venv (`make vllm-venv`) and MIMO_TEST_VLLM=1 (two vLLM start-ups, a few minutes on
2 cores). vLLM loads models/tiny-mimo itself with `trust_remote_code` (its config through auto_map), no shim.
The prompts include near-ties: out of 160 random-token prompts, the 16 whose greedy path under our model has
the smallest top-2 logit gap, beside 8 in-domain chat prompts; the smallest gap is printed (run with -s).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bench.vllm import Ours, VllmPeer, chat_prompts, vllm_python
from services.worker.model import load_mimo

TINY = Path(__file__).resolve().parents[2] / "models" / "tiny-mimo"
NEW_TOKENS = 32

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(vllm_python() is None, reason="no vLLM venv at .venv-vllm: run `make vllm-venv`"),
    pytest.mark.skipif(os.environ.get("MIMO_TEST_VLLM") != "1", reason="opt-in: set MIMO_TEST_VLLM=1"),
]


def top2_gaps(model, prompt: list[int], output: list[int]) -> list[float]:
    """Our top-1 minus top-2 logit at each generated token (teacher-forced over prompt + output, fp32)."""
    ids = torch.tensor([prompt + output[:-1]])
    with torch.no_grad():
        logits = model.compute_logits(model(ids, torch.arange(ids.shape[1])))[0, len(prompt) - 1 :]
    best = logits.topk(2, dim=-1).values
    return (best[:, 0] - best[:, 1]).tolist()


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory):
    """The prompts and our greedy outputs (MTP off and on), plus our top-2 gaps along each output."""
    model = load_mimo(TINY, "cpu", torch.float32)
    gen = torch.Generator().manual_seed(22)
    pool = [
        torch.randint(3, 576, (int(n),), generator=gen).tolist() for n in torch.randint(4, 40, (160,), generator=gen)
    ]
    off = Ours(model, False, len(pool), 40 + NEW_TOKENS + 2)
    pool_out = off.generate(pool, NEW_TOKENS).token_ids
    min_gap = [min(top2_gaps(model, p, o)) for p, o in zip(pool, pool_out, strict=True)]
    near = sorted(range(len(pool)), key=min_gap.__getitem__)[:16]
    prompts = chat_prompts(TINY, 8, 5) + [pool[i] for i in near]
    outs = {"off": off.generate(prompts, NEW_TOKENS).token_ids}
    outs["on"] = Ours(model, True, len(prompts), 40 + NEW_TOKENS + 2).generate(prompts, NEW_TOKENS).token_ids
    gaps = [top2_gaps(model, p, o) for p, o in zip(prompts, outs["off"], strict=True)]
    return prompts, outs, gaps, tmp_path_factory.mktemp("vllm")


@pytest.mark.parametrize("mtp", ["off", "on"])
def test_greedy_tokens_agree_with_vllm(case, mtp: str) -> None:
    prompts, outs, gaps, logs = case
    peer = VllmPeer(TINY, [min(os.sched_getaffinity(0))], "float32", mtp == "on", logs / f"vllm-{mtp}.log")
    try:
        run = peer.generate(prompts, NEW_TOKENS, logprobs=2 if mtp == "off" else None)
    finally:
        peer.close()
    smallest = min((g, i, t) for i, row in enumerate(gaps) for t, g in enumerate(row))
    print(f"\nMTP {mtp}: smallest top-2 logit gap (ours, fp32) {smallest[0]:.3g} at prompt {smallest[1]} token "
          f"{smallest[2]}; vLLM drafted {run.drafted}, accepted {run.accepted}")  # fmt: skip
    if run.top2 is not None:
        theirs = min(a[1] - a[3] for row in run.top2 for a in row)
        print(f"MTP {mtp}: smallest top-2 logprob gap (vLLM) {theirs:.3g}")
    assert smallest[0] < 0.05, "the near-tie selection found no close call: the test would prove little"
    for i, (mine, their) in enumerate(zip(outs[mtp], run.token_ids, strict=True)):
        first = next((t for t, (a, b) in enumerate(zip(mine, their, strict=True)) if a != b), None)
        assert first is None, f"prompt {i}: first differing token {first}, our top-2 gap there {gaps[i][first]:.3g}"
    assert outs["on"] == outs["off"], "our MTP changed greedy output"
    if mtp == "on":
        assert run.drafted > 0 and run.accepted > 0, "vLLM ran no MTP drafts"
