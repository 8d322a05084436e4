"""The CPU layers (oneDNN prepacked GEMMs, bf16 attention in fp32) give the exact path's logits, and follow weight updates."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from services.worker.engine_api import SamplingConfig
from services.worker.engines.torch.cpu_layers import PackedLinear, packed_linear_works
from services.worker.engines.torch.model_runner import ModelRunner
from services.worker.engines.torch.sequence import Sequence
from services.worker.engines.torch.stop import StopChecker
from tests.support.torch_engine import random_model

pytestmark = pytest.mark.skipif(not packed_linear_works(torch.float32), reason="torch built without oneDNN")

BLOCK = 4


def make_seq(seq_id: int, tokens: list[int]) -> Sequence:
    s = SamplingConfig(temperature=0.0, max_new_tokens=16)
    return Sequence(seq_id, f"r{seq_id}", 0, list(tokens), len(tokens), s, 16, StopChecker.build(s, (), 16, None))


def step_logits(runner: ModelRunner, seqs: list[Sequence], is_cpu_path: bool) -> torch.Tensor:
    """Logits [N, V] of one forward over each sequence's pending tokens, on the CPU layers or the exact path."""
    saved = runner.cpu_layers, runner.cpu_lm_head
    if not is_cpu_path:
        runner.cpu_layers, runner.cpu_lm_head = None, None
    try:
        with torch.inference_mode():
            return runner.logits(runner.forward(runner.prepare(seqs, [s.pending_tokens() for s in seqs]))).float()
    finally:
        runner.cpu_layers, runner.cpu_lm_head = saved


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-4), (torch.bfloat16, 6e-2)])
def test_prefill_and_decode_logits_equal_the_exact_path(dtype: torch.dtype, tol: float) -> None:
    """Ragged prefill (the padded attention path) then three uniform decode steps (the bf16 fp32-attention path)."""
    model = random_model().to(dtype)
    num_blocks = 64
    runner = ModelRunner(model, BLOCK, num_blocks, use_cuda_graphs=False, compile_kernels=False)
    assert runner.cpu_layers is not None
    gen = torch.Generator().manual_seed(3)
    seqs = [make_seq(i, torch.randint(0, model.config.vocab_size, (n,), generator=gen).tolist()) for i, n in
            enumerate([5, 11, 3, 8])]  # fmt: skip
    for i, seq in enumerate(seqs):
        seq.block_table = list(range(i * 8, i * 8 + 8))
    for step in range(4):
        exact = step_logits(runner, seqs, False)
        fast = step_logits(runner, seqs, True)  # overwrites the step's KV slots with its own values
        assert fast.shape == exact.shape
        torch.testing.assert_close(fast, exact, rtol=tol, atol=tol, msg=f"step {step}")
        ends = torch.tensor([len(s.pending_tokens()) for s in seqs]).cumsum(0) - 1
        for seq, token in zip(seqs, fast[ends].argmax(-1).tolist(), strict=True):
            seq.num_computed_tokens = seq.num_tokens
            seq.token_ids.append(token)


def test_a_packed_linear_follows_an_in_place_update_of_its_weight() -> None:
    """UpdateWeights copies into the served tensors; the packed copy must not keep serving the old ones."""
    gen = torch.Generator().manual_seed(0)
    fused = torch.randn(12, 6, generator=gen)
    view = fused[:8]  # the runner packs views of the fused q|k|v and gate|up matrices
    linear, x = PackedLinear(view), torch.randn(3, 6, generator=gen)
    torch.testing.assert_close(linear(x), F.linear(x, view), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        fused.copy_(torch.randn(12, 6, generator=gen))
    torch.testing.assert_close(linear(x), F.linear(x, view), rtol=1e-5, atol=1e-5)
    residual = torch.randn(3, 8, generator=gen)
    torch.testing.assert_close(linear(x, residual), F.linear(x, view) + residual, rtol=1e-5, atol=1e-5)
