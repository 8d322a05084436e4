"""On CUDA: graphed decode and MTP verify give the same greedy tokens as eager and as the CPU."""

from __future__ import annotations

import pytest
import torch

from services.worker.engine_api import GenerateInput, SamplingConfig
from services.worker.engines.torch.core import EngineCore
from tests.support.torch_engine import (
    SMALL,
    greedy,
    make_core,
    random_model,
    random_prompts,
    run_all,
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


def test_seeded_sampling_with_mtp_on_cuda_repeats() -> None:
    model = random_model().to("cuda")
    s = SamplingConfig(temperature=0.8, top_p=0.9, top_k=20, max_new_tokens=12, seed=7, n=3)
    first = run_all(make_core(model), [GenerateInput("a", (1, 2, 3), s)])
    again = run_all(make_core(model), [GenerateInput("a", (1, 2, 3), s)])
    assert {k: tokens_of(v) for k, v in first.items()} == {k: tokens_of(v) for k, v in again.items()}
    assert len({tuple(tokens_of(v)) for v in first.values()}) > 1  # the n samples differ
