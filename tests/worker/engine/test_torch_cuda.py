"""On CUDA: graphed decode and MTP verify give the same greedy tokens as eager and as the CPU."""

from __future__ import annotations

import pytest
import torch

from services.worker.engine_api import GenerateInput, SamplingConfig
from services.worker.engines.torch.core import EngineCore
from services.worker.model import load_mimo
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

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def outputs(core: EngineCore, requests: list[GenerateInput]) -> dict[str, list[int]]:
    return {rid: tokens_of(chunks) for (rid, _), chunks in run_all(core, requests).items()}


def test_graphs_and_mtp_on_cuda_keep_the_cpu_greedy_tokens() -> None:
    cpu_model = random_model()
    gpu_model = random_model().to("cuda")
    prompts = random_prompts(40, SMALL.vocab_size, seed=5)
    requests = [GenerateInput(f"r{i}", tuple(p), greedy(6 + i % 13)) for i, p in enumerate(prompts)]
    reference = outputs(make_core(cpu_model, is_mtp=False), requests)
    for is_mtp, overlap in ((False, False), (False, True), (True, None)):  # plain decode overlaps by default
        for graphs in (False, True):
            core = make_core(gpu_model, is_mtp=is_mtp, use_cuda_graphs=graphs, overlap_decode=overlap)
            assert outputs(core, requests) == reference, f"mtp={is_mtp} overlap={overlap} graphs={graphs}"
            assert (core.runner.graphs is not None and len(core.runner.graphs) > 0) == graphs


def test_overlapped_switches_in_padded_graphs_keep_the_cpu_greedy_tokens() -> None:
    """Tiny MiMo (fp32; it accepts about half its drafts), the MTP policy flipping every few steps (probes every
    2 choices) while streams of different lengths finish: steps ahead of both modes after both modes, replayed
    from graphs whose batch holds padding rows (3 streams in a graph of 4, then 2, then 1). The tokens stay the
    CPU plain engine's."""
    requests = [GenerateInput(f"t{i}", p, greedy(24 + 12 * i)) for i, p in enumerate(tiny_chat_prompts())]
    reference = outputs(make_core(load_mimo(TINY_MIMO, "cpu", torch.float32), is_mtp=False), requests)
    core = make_core(load_mimo(TINY_MIMO, "cuda", torch.float32), is_mtp=True, overlap_decode=True)
    policy = core.runner.spec_policy
    policy.probe_every = policy.max_probe_every = 2
    assert outputs(core, requests) == reference
    keys = list(core.runner.graphs.graphs) if core.runner.graphs is not None else []
    # Plain steps were replayed after MTP steps (their inputs hold that step's tokens [B, 2] and acceptance), and
    # MTP steps after a step ahead in the padded graph of 4 (3 streams).
    assert any(k[0] == "decode" and len(k) == 8 for k in keys), keys
    assert any(k[0] == "spec" and len(k) == 9 and k[2][0] == 4 * 2 for k in keys), keys
    assert 0 < core.num_accepted_tokens < core.num_draft_tokens


def test_seeded_sampling_with_mtp_on_cuda_repeats() -> None:
    model = random_model().to("cuda")
    s = SamplingConfig(temperature=0.8, top_p=0.9, top_k=20, max_new_tokens=12, seed=7, n=3)
    first = run_all(make_core(model), [GenerateInput("a", (1, 2, 3), s)])
    again = run_all(make_core(model), [GenerateInput("a", (1, 2, 3), s)])
    assert {k: tokens_of(v) for k, v in first.items()} == {k: tokens_of(v) for k, v in again.items()}
    assert len({tuple(tokens_of(v)) for v in first.values()}) > 1  # the n samples differ
