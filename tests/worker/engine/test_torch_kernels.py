"""The Triton paged-attention kernels against the exact PyTorch path: random shapes, block sizes, ragged lengths.

Runs on CUDA, or on the CPU under Triton's interpreter (TRITON_INTERPRET=1 with triton installed; Triton 3.6's
interpreter needs numpy < 2.4, whose int() of a one-element array it relies on);
skipped where neither is available (CI has no Triton: there the exact path is the engine's only one).
"""

from __future__ import annotations

import itertools
import os

import pytest
import torch
import torch.nn.functional as F

from services.worker.engines.torch.attention import StepTensors, attn_meta
from services.worker.engines.torch.attention import paged_attention as exact_attention
from services.worker.engines.torch.kernels import triton_available
from tests.support.torch_engine import SMALL, greedy, make_core, random_model, random_prompts, run_all

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(not triton_available(DEVICE), reason="needs Triton on CUDA or TRITON_INTERPRET=1")
INTERPRETED = DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def build_case(gen: torch.Generator, num_seqs: int, block_size: int, num_q: list[int], num_ctx: list[int]):
    """Random caches, shuffled block tables, new-token rows at the end of each context (KV already written)."""
    hq, hkv, d = 8, 2, 32
    num_blocks = sum(-(-c // block_size) for c in num_ctx) + 3
    k_cache = torch.randn(num_blocks * block_size, hkv, d, generator=gen).to(DEVICE)
    v_cache = torch.randn(num_blocks * block_size, hkv, d, generator=gen).to(DEVICE)
    order = torch.randperm(num_blocks, generator=gen).tolist()
    width = max(-(-c // block_size) for c in num_ctx)
    tables, used = [], 0
    for c in num_ctx:
        n = -(-c // block_size)
        tables.append(order[used : used + n] + [order[-1]] * (width - n))
        used += n
    q = torch.randn(sum(num_q), hq, d, generator=gen).to(DEVICE)
    return q, k_cache, v_cache, torch.tensor(tables, device=DEVICE)


def reference(q, k_cache, v_cache, tables, num_q, num_ctx, block_size):
    out, row = [], 0
    rep = q.shape[1] // k_cache.shape[1]
    for b, (nq, nc) in enumerate(zip(num_q, num_ctx, strict=True)):
        slots = torch.tensor([int(tables[b, p // block_size]) * block_size + p % block_size for p in range(nc)])
        k = k_cache[slots.to(DEVICE)].double().repeat_interleave(rep, 1).transpose(0, 1)
        v = v_cache[slots.to(DEVICE)].double().repeat_interleave(rep, 1).transpose(0, 1)
        mask = torch.arange(nc, device=DEVICE)[None] <= torch.arange(nc - nq, nc, device=DEVICE)[:, None]
        o = F.scaled_dot_product_attention(q[row : row + nq].double().transpose(0, 1), k, v, attn_mask=mask)
        out.append(o.transpose(0, 1).reshape(nq, -1))
        row += nq
    return torch.cat(out)


@pytest.mark.parametrize("seed", range(3 if INTERPRETED else 12))
def test_kernel_matches_fp64_attention_on_random_ragged_batches(seed: int) -> None:
    from services.worker.engines.torch.kernels.paged_attention import paged_attention, query_blocks

    gen = torch.Generator().manual_seed(seed)
    block_size = [1, 4, 16, 32][(seed + seed // 4) % 4]
    num_seqs = int(torch.randint(2, 6, (), generator=gen))
    max_ctx = 300 if INTERPRETED else 3000
    num_ctx = torch.randint(100, max_ctx, (num_seqs,), generator=gen).tolist()
    # decode, verify (2), prefill/extend (ragged, prefix hits: fewer new tokens than context), and a chunk
    # beside decoding sequences (a mixed step: both of query_blocks' maps)
    kind = seed % 4
    chunk = lambda: int(torch.randint(1, 90, (), generator=gen))  # noqa: E731
    num_q = [[1, 2, chunk(), chunk() if b == 0 else 1][kind] for b in range(num_seqs)]
    q, k_cache, v_cache, tables = build_case(gen, num_seqs, block_size, num_q, num_ctx)
    starts = torch.tensor([0, *torch.tensor(num_q).cumsum(0).tolist()], device=DEVICE)
    small, big = query_blocks(num_q, q.shape[1] // k_cache.shape[1], q.dtype)
    maps = torch.tensor(small + big, device=DEVICE).view(-1, 2)
    blocks = (maps[: len(small) // 2], maps[len(small) // 2 :])
    ref = reference(q, k_cache, v_cache, tables, num_q, num_ctx, block_size)
    # one split, and many splits merged by log-sum-exp; every sequence given the longest one's query
    # blocks, and only the blocks that hold rows, in one launch per map (ragged steps; on CUDA the two maps'
    # launches run side by side on two streams, each merge writing only its own rows)
    for num_sms, q_blocks in ((1, None), (132, None), (1, blocks), (132, blocks)):
        out = paged_attention(q, k_cache, v_cache, tables, starts, torch.tensor(num_ctx, device=DEVICE), block_size,
                              max(num_q), num_sms, q_blocks=q_blocks)  # fmt: skip
        err = (out.double() - ref).norm() / ref.norm()
        assert err < 1e-5, (
            f"relative error {err:.2e} (block {block_size}, q {num_q}, ctx {num_ctx}, sms {num_sms}, "
            f"mapped {q_blocks is not None})"
        )


def test_query_blocks_launch_only_blocks_that_hold_rows() -> None:
    from services.worker.engines.torch.kernels.paged_attention import query_blocks

    # 4 query heads per kv head: a decoding row is 4 rows (one 16-row block), a 200-token chunk 800 (7 of 128)
    assert query_blocks([1, 200, 1], 4, torch.bfloat16) == ([0, 0, 2, 0], [v for b in range(7) for v in (1, b)])
    assert query_blocks([2, 2], 4, torch.bfloat16) == ([0, 0, 1, 0], [])  # verify: 16-row blocks
    assert query_blocks([5, 1], 4, torch.bfloat16) == ([1, 0], [0, 0])  # 20 rows: one 128-row block


@pytest.mark.parametrize("rows", [1, 2, 5, 16])
def test_gemv_matches_fp64_linear_on_random_shapes(rows: int) -> None:
    """The decode GEMVs (FMA for one or two rows, tensor cores up to 16), with and without bias, N and K on
    and off their tile sizes."""
    from services.worker.engines.torch.kernels.gemv import GemvConfig, gemv, linear

    gen = torch.Generator().manual_seed(rows)
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float32
    configs = [GemvConfig(dot=True, block_n=32, block_k=256), GemvConfig(dot=True, block_n=16, block_k=128)]
    if rows <= 2:
        configs += [GemvConfig(num_warps=2), GemvConfig(block_n=8, block_k=256)]
    for n, k in ((64, 1024), (100, 300), (6144, 4096), (37, 2048 + 8)):
        x = torch.randn(rows, k, generator=gen).to(DEVICE, dtype)
        w = (torch.randn(n, k, generator=gen) / k**0.5).to(DEVICE, dtype)
        b = torch.randn(n, generator=gen).to(DEVICE, dtype)
        ref = x.double() @ w.double().T
        for config in configs:
            for bias in (None, b):
                got = gemv(x, w, bias, config).double()
                want = ref if bias is None else ref + bias.double()
                err = (got - want).abs().max() / want.abs().max()
                assert err < 1e-2, (
                    f"relative error {err:.2e} (N {n}, K {k}, rows {rows}, {config}, bias {bias is not None})"
                )
        torch.testing.assert_close(linear(x, w, b), F.linear(x, w, b), rtol=2e-2, atol=2e-2)
    with pytest.raises(ValueError, match="gemv takes"):
        gemv(
            torch.randn(3, 64, device=DEVICE, dtype=dtype),
            torch.randn(8, 64, device=DEVICE, dtype=dtype),
            None,
            GemvConfig(),
        )


def test_rowwise_gemv_gives_each_row_the_same_bits_whatever_the_other_rows() -> None:
    """An MTP model's linears (`rowwise`): verify's two rows at batch 1 must each be bitwise what plain
    decode's one row gives, or greedy MTP on and off part where logits nearly tie (up to 16 rows)."""
    from services.worker.engines.torch.kernels.gemv import config_for, gemv

    gen = torch.Generator().manual_seed(7)
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float32
    for n, k in ((6144, 4096), (100, 300)):
        w = (torch.randn(n, k, generator=gen) / k**0.5).to(DEVICE, dtype)
        x = torch.randn(16, k, generator=gen).to(DEVICE, dtype)
        alone = [gemv(x[i : i + 1], w, config=config_for(n, k, 1, rowwise=True))[0] for i in range(16)]
        for rows in (2, 5, 16):
            together = gemv(x[:rows], w, config=config_for(n, k, rows, rowwise=True))
            for i in range(rows):
                assert torch.equal(together[i], alone[i]), (
                    f"row {i} of {rows} differs from its row alone (N {n}, K {k})"
                )


@pytest.mark.parametrize("context", [300, 511, 512, 2000])
def test_a_decode_row_has_the_same_bits_whatever_the_batch_the_table_and_a_verify(context: int) -> None:
    """Greedy MTP on == off rests on it: a decoding sequence's attention is bitwise the same alone and in a
    batch of 64 (an MTP engine's batch shrinks as streams finish, a plain one's does not), with its block table
    padded wider (a step prepared two positions ahead may take the next column bucket), and as the first row of
    an MTP verify (its draft's key masked; at 512 the draft's key opens a new split)."""
    from services.worker.engines.torch.kernels.paged_attention import paged_attention

    gen = torch.Generator().manual_seed(context)
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float32
    block_size, num_ctx = 16, [context + 1, *torch.randint(100, 3000, (63,), generator=gen).tolist()]
    q, k_cache, v_cache, tables = (t.to(dtype) if t.is_floating_point() else t for t in
                                   build_case(gen, 64, block_size, [1] * 64, num_ctx))  # fmt: skip
    draft_q = torch.randn(1, *q.shape[1:], generator=gen).to(DEVICE, dtype)

    def attend(q, tables, seq_lens, max_q_len):
        starts = [0, *itertools.accumulate([max_q_len] * len(seq_lens))]
        return paged_attention(q, k_cache, v_cache, tables, torch.tensor(starts, device=DEVICE),
                               torch.tensor(seq_lens, device=DEVICE), block_size, max_q_len, 132)  # fmt: skip

    seq_lens = [context, *num_ctx[1:]]
    batch = attend(q, tables, seq_lens, 1)[0]
    alone = attend(q[:1], tables[:1], [context], 1)[0]
    wider = attend(q[:1], F.pad(tables[:1], (0, 3 * tables.shape[1]), value=int(tables[0, -1])), [context], 1)[0]
    verify = attend(torch.cat([q[:1], draft_q]), tables[:1], [context + 1], 2)[0]
    for name, got in (("alone", alone), ("in a wider table", wider), ("as a verify's first row", verify)):
        assert torch.equal(got, batch), f"the row {name} differs from the row in a batch of 64 (context {context})"


def test_rope_and_store_matches_the_exact_layer_path() -> None:
    from services.worker.engines.torch.kernels.paged_attention import rope_and_store
    from services.worker.engines.torch.layers import rotary

    gen = torch.Generator().manual_seed(1)
    n, hq, hkv, d = 7, 8, 2, 32
    qkv = torch.randn(n, (hq + 2 * hkv) * d, generator=gen).to(DEVICE)
    cos, sin = torch.randn(2, n, 1, d, generator=gen).to(DEVICE)
    slots = torch.randperm(40, generator=gen)[:n].to(DEVICE)
    k_cache, v_cache = torch.zeros(2, 40, hkv, d, device=DEVICE)
    q = rope_and_store(qkv, cos, sin, slots, k_cache, v_cache, hq)
    qk = rotary(qkv[:, : (hq + hkv) * d].view(n, -1, d), cos, sin)
    torch.testing.assert_close(q, qk[:, :hq])
    torch.testing.assert_close(k_cache[slots], qk[:, hq:])
    torch.testing.assert_close(v_cache[slots], qkv[:, (hq + hkv) * d :].view(n, hkv, d))
    untouched = torch.ones(40, dtype=torch.bool, device=DEVICE).index_fill_(0, slots, False)
    assert not k_cache[untouched].any() and not v_cache[untouched].any()


def test_exact_path_is_unchanged_by_kernel_metadata() -> None:
    """The CPU path still builds its gather metadata from a StepTensors carrying the kernel fields."""
    step = StepTensors(torch.tensor([1]), torch.tensor([0]), torch.tensor([0]), torch.tensor([[0]]), max_query_len=1)
    meta = attn_meta(step, 4, 2, torch.float32)
    q, kv = torch.randn(1, 4, 16), torch.randn(1, 2, 16)
    out = exact_attention(q, kv, kv, torch.zeros(8, 2, 16), torch.zeros(8, 2, 16), meta)
    assert out.shape == (1, 64)


@pytest.mark.parametrize(("is_mtp", "budget"), [(False, 8192), (True, 8192), (False, 16), (True, 16)])
def test_engine_with_kernels_keeps_the_exact_greedy_tokens(is_mtp: bool, budget: int) -> None:
    """Whole engine, prefix hits included (shared prompt heads), kernels vs exact path: same greedy tokens.
    A 16-token budget makes most steps mixed: prompt chunks beside decoding rows (the query-block map); on
    CUDA those replay padded graphs (ragged graphs: padding tokens and an empty sequence owning the maps'
    padding), grown by the scheduler to 64-token multiples. The one-step prefill of all 24 prompts (8192) has
    more prompt chunks than a ragged graph's map holds, so it runs eagerly."""
    model = random_model().to(DEVICE)
    head = random_prompts(1, SMALL.vocab_size, seed=9, min_len=10, max_len=10)[0]
    prompts = [head + p for p in random_prompts(6 if INTERPRETED else 24, SMALL.vocab_size, seed=3)]
    requests = [(f"r{i}", tuple(p), 4 + i % 7) for i, p in enumerate(prompts)]
    outs = []
    for use_kernels in (False, True):
        core = make_core(model, is_mtp=is_mtp, use_cuda_graphs=DEVICE == "cuda", max_batch_tokens=budget)
        core.runner.use_kernels = use_kernels
        from services.worker.engine_api import GenerateInput

        got = run_all(core, [GenerateInput(r, p, greedy(n)) for r, p, n in requests])
        outs.append({k: [t for c in v for t in c.token_ids] for k, v in got.items()})
        assert core.blocks.num_hit_tokens > 0  # some requests reused cached prefix blocks
        if use_kernels and core.runner.ragged_graphs is not None and budget == 16:
            assert len(core.runner.ragged_graphs) > 0  # the mixed steps replayed graphs
    assert outs[0] == outs[1]
