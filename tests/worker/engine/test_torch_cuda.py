"""On CUDA: graphed decode and MTP verify give the same greedy tokens as eager and as the CPU."""

from __future__ import annotations

import pytest
import torch

from services.worker.engine_api import GenerateInput, SamplingConfig
from services.worker.engines.torch.core import EngineCore
from services.worker.engines.torch.cuda_graphs import GraphCache
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


def test_the_graphs_captured_at_start_serve_a_batch_shrinking_through_every_bucket() -> None:
    """Eight streams of tiny MiMo finishing one by one (batch buckets 8, 4, 2, 1), greedy and then sampled, plain
    and MTP: every graph an engine without start-up capture records on the way was already captured when the
    engine started, so no step stalls on a capture mid-stream, and the greedy tokens are the same."""
    model = load_mimo(TINY_MIMO, "cuda", torch.float32)
    prompts = tiny_chat_prompts()
    greedy_reqs = [GenerateInput(f"g{i}", prompts[i % 3], greedy(4 + 8 * i)) for i in range(8)]
    sampled = [GenerateInput(f"s{i}", prompts[i % 3], SamplingConfig(temperature=0.8, max_new_tokens=4 + 8 * i))
               for i in range(8)]  # fmt: skip
    for is_mtp in (False, True):
        cores = [make_core(model, is_mtp=is_mtp, block_size=16, max_running_requests=8, capture_at_start=at_start)
                 for at_start in (False, True)]  # fmt: skip
        graphs = [core.runner.graphs for core in cores]
        assert graphs[0] is not None and graphs[1] is not None
        assert len(graphs[0]) == 0 and len(graphs[1]) > 0
        started = set(graphs[1].graphs)
        tokens = [outputs(core, greedy_reqs) for core in cores]
        assert tokens[0] == tokens[1], f"mtp={is_mtp}"
        for core in cores:
            run_all(core, sampled)
        lazy = set(graphs[0].graphs)
        assert {k[0] for k in lazy} >= ({"decode", "target", "spec", "mtp"} if is_mtp else {"decode", "target"})
        assert lazy <= started and set(graphs[1].graphs) == started, f"mtp={is_mtp}: {lazy - started}"


def test_a_full_graph_cache_evicts_the_least_recently_replayed() -> None:
    cache, x = GraphCache(max_graphs=2), torch.arange(4.0, device="cuda")
    double, square = (lambda t: t * 2), (lambda t: t * t)
    assert cache.run("double", double, (x,)).tolist() == [0, 2, 4, 6]
    assert cache.run("square", square, (x,)).tolist() == [0, 1, 4, 9]
    assert cache.run("double", double, (x + 1,)).tolist() == [2, 4, 6, 8]  # replayed: "square" is now the oldest
    assert cache.run("plus", lambda t: t + 1, (x,)).tolist() == [1, 2, 3, 4]
    assert list(cache.graphs) == ["double", "plus"]


def test_seeded_sampling_with_mtp_on_cuda_repeats() -> None:
    model = random_model().to("cuda")
    s = SamplingConfig(temperature=0.8, top_p=0.9, top_k=20, max_new_tokens=12, seed=7, n=3)
    first = run_all(make_core(model), [GenerateInput("a", (1, 2, 3), s)])
    again = run_all(make_core(model), [GenerateInput("a", (1, 2, 3), s)])
    assert {k: tokens_of(v) for k, v in first.items()} == {k: tokens_of(v) for k, v in again.items()}
    assert len({tuple(tokens_of(v)) for v in first.values()}) > 1  # the n samples differ
