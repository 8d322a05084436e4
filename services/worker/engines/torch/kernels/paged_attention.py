"""Triton paged attention over block tables: decode, MTP verify and prefill/extend in one varlen kernel.

Each program takes one sequence, one KV head and one slice of the context ("split", flash-decoding):
its query rows are the sequence's new tokens times the kv head's query heads (GQA folded into the
rows, so K and V are read once per kv head), causal on absolute positions (the queries are the last
`q_len` positions of a context of `seq_len`). Keys are read in place from the paged cache through the
block table: no gather, no dense mask. With several splits, a second kernel merges the partial
results by their log-sum-exp. Shapes come only from tensor shapes, so it can be CUDA-graphed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

LOG2E = 1.4426950408889634


@dataclass(frozen=True, slots=True)
class Plan:
    """Launch shape: query rows per program, keys per iteration, context splits and tokens per split."""

    block_m: int
    block_n: int
    num_splits: int
    split_tokens: int
    num_q_blocks: int  # query-row blocks per sequence
    num_warps: int
    num_stages: int


@dataclass(frozen=True, slots=True)
class Tiles:
    """Prefill/extend tile shape (decode and verify always use 16 x 64, 4 warps, 2 stages)."""

    block_m: int = 128
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 4


# The H200's best of `python -m bench.attention --sweep` (bench/ENGINE_NOTES.md), with and without 32
# decoding rows beside a 512-token chunk at 4K and 8K context: 262 / 318 TFLOP/s alone; 8 warps, 3 stages
# (the tile before) took 193 / 321 us beside the decode rows against 158 / 240 us.
PREFILL_TILES = Tiles()
FP32_TILES = Tiles(64, 64, 4, 2)  # fp32 tiles of the default shape would not fit in shared memory


def tiles_for(dtype: torch.dtype) -> Tiles:
    return FP32_TILES if dtype == torch.float32 else PREFILL_TILES


DECODE_ROWS = 16  # query rows per program of decode and verify (a sequence's new tokens x heads per kv head)
# Decode and verify split each context into pieces of this many keys, merged by log-sum-exp. A fixed size (not a
# number of splits sized to fill the GPU) sums each query row's keys in the same order whatever the batch, the
# block table's width and the other rows: an MTP step's verify rows (2 a sequence, in a batch that shrinks as
# streams finish, its table a column bucket wider near a boundary) give plain decode's bits, so greedy MTP on
# stays == off in bf16 (splits fitted to the batch parted them late in long runs). Empty splits add exact zeros.
DECODE_SPLIT = 256


def rows_per_block(max_q_len: int, rep: int, tiles: Tiles) -> int:
    """Query rows per program: 16 for decode and verify, the prefill tile's otherwise."""
    return DECODE_ROWS if max_q_len * rep <= DECODE_ROWS else tiles.block_m


def query_blocks(query_lens: Sequence[int], rep: int, dtype: torch.dtype) -> tuple[list[int], list[int]]:
    """A ragged step's programs as two maps of flat (sequence, query block) pairs, only blocks that hold rows:
    the sequences whose rows fit one 16-row block (decoding, verifying), then the others' prefill-tile blocks.

    With one map for all, every sequence gets the longest one's rows per block and block count: a decoding
    sequence beside a long prompt chunk would run 128-row tiles for its 4 rows, or hundreds of empty programs.
    """
    block_m = tiles_for(dtype).block_m
    small = [v for b, n in enumerate(query_lens) if n * rep <= DECODE_ROWS for v in (b, 0)]
    big = [
        v
        for b, n in enumerate(query_lens)
        if n * rep > DECODE_ROWS
        for block in range(-(-n * rep // block_m))
        for v in (b, block)
    ]
    return small, big


def big_blocks_bound(num_tokens: int, rep: int, dtype: torch.dtype, num_prompts: int) -> int:
    """Prefill-tile programs enough for `num_tokens` query tokens in up to `num_prompts` sequences: the length
    of a padded step's map of them (`ModelRunner.prepare`)."""
    return triton.cdiv(num_tokens * rep, tiles_for(dtype).block_m) + num_prompts


def plan(
    num_seqs: int,
    num_kv_heads: int,
    rep: int,
    max_q_len: int,
    max_context: int,
    num_sms: int,
    tiles: Tiles,
    num_mapped: int | None = None,
    can_split: bool = True,
) -> Plan:
    """Decode/verify: 16 query rows, the context in `DECODE_SPLIT`-key splits. Prefill/extend: `tiles`, and the
    context split in up to 16 pieces of >= 1,024 keys while the programs number under 8 per SM (a short
    chunk against a long context: few programs, each a long loop). `num_mapped`: programs of a query map;
    not `can_split`: one split (a launch whose rows another launch's merge would overwrite)."""
    block_m = rows_per_block(max_q_len, rep, tiles)
    is_decode = block_m == DECODE_ROWS
    block_n = 64 if is_decode else tiles.block_n
    num_q_blocks = triton.cdiv(max_q_len * rep, block_m)
    programs = num_kv_heads * (num_seqs * num_q_blocks if num_mapped is None else num_mapped)
    if not can_split:
        num_splits = 1
    elif is_decode:  # fixed-size splits: `DECODE_SPLIT`
        return Plan(block_m, block_n, triton.cdiv(max_context, DECODE_SPLIT), DECODE_SPLIT, num_q_blocks, 4, 2)
    else:
        num_splits = max(1, min(triton.cdiv(max_context, 1024), 8 * num_sms // programs, 16))
    split_tokens = triton.cdiv(triton.cdiv(max_context, num_splits), block_n) * block_n
    num_splits = triton.cdiv(max_context, split_tokens)
    warps, stages = (4, 2) if is_decode else (tiles.num_warps, tiles.num_stages)
    return Plan(block_m, block_n, num_splits, split_tokens, num_q_blocks, warps, stages)


@triton.jit
def _attend_tile(
    q, acc, m_i, l_i, k_ptr, v_ptr, table_ptr, head_offset, stride_kn, start, hi, q_pos, scale_log2,
    BS: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr, MASKED: tl.constexpr,
):  # fmt: skip
    """One tile of keys [start, start + BLOCK_N) into the running softmax (m_i, l_i) and output acc.
    MASKED: the tile may hold keys past `hi` or past some row's position (causal); else all are visible."""
    keys = start + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, D)
    key_ok = keys < hi
    if MASKED:  # noqa: SIM108 (constexpr branch)
        block = tl.load(table_ptr + keys // BS, mask=key_ok, other=0)
    else:
        block = tl.load(table_ptr + keys // BS)
    slots = (block.to(tl.int64) * BS + keys % BS) * stride_kn + head_offset
    if MASKED:
        k = tl.load(k_ptr + slots[:, None] + dims[None, :], mask=key_ok[:, None], other=0.0)
    else:
        k = tl.load(k_ptr + slots[:, None] + dims[None, :])
    if IEEE:  # noqa: SIM108 (constexpr branch)
        s = tl.dot(q, tl.trans(k), input_precision="ieee")
    else:
        s = tl.dot(q, tl.trans(k))
    if MASKED:
        allowed = (keys[None, :] <= q_pos[:, None]) & key_ok[None, :]
        s = tl.where(allowed, s * scale_log2, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        s = s * scale_log2
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = m_new
    p = tl.exp2(s - m_safe[:, None])
    alpha = tl.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    if MASKED:
        v = tl.load(v_ptr + slots[:, None] + dims[None, :], mask=key_ok[:, None], other=0.0)
    else:
        v = tl.load(v_ptr + slots[:, None] + dims[None, :])
    if IEEE:
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
    else:
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, m_new, l_i


@triton.jit(do_not_specialize=["NUM_Q_BLOCKS", "SPLIT_TOKENS"])
def _attn_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, part_ptr, lse_ptr, tables_ptr, q_start_ptr, seq_len_ptr, q_blocks_ptr,
    stride_qn, stride_qh, stride_kn, stride_kh, stride_tb, stride_on, stride_ps, stride_pn, stride_ls, stride_ln,
    scale_log2, NUM_Q_BLOCKS, SPLIT_TOKENS,  # runtime ints: prefill shapes vary every step (no recompiles)
    REP: tl.constexpr, BS: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_SPLIT: tl.constexpr, IEEE: tl.constexpr, HAS_MAP: tl.constexpr,
):  # fmt: skip
    if HAS_MAP:  # ragged steps: each program's (sequence, query block) from the map
        seq = tl.load(q_blocks_ptr + 2 * tl.program_id(0))
        q_block = tl.load(q_blocks_ptr + 2 * tl.program_id(0) + 1)
    else:
        seq = tl.program_id(0) // NUM_Q_BLOCKS
        q_block = tl.program_id(0) % NUM_Q_BLOCKS
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    q_begin = tl.load(q_start_ptr + seq)
    q_len = tl.load(q_start_ptr + seq + 1) - q_begin
    seq_len = tl.load(seq_len_ptr + seq)
    rows = q_block * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < q_len * REP
    tok = rows // REP
    head = kv_head * REP + rows % REP
    q_pos = seq_len - q_len + tok
    dims = tl.arange(0, D)
    q = tl.load(
        q_ptr + (q_begin + tok)[:, None] * stride_qn + head[:, None] * stride_qh + dims[None, :],
        mask=row_ok[:, None],
        other=0.0,
    )
    last_tok = tl.minimum(q_block * BLOCK_M + BLOCK_M - 1, q_len * REP - 1) // REP
    hi = tl.minimum(seq_len - q_len + last_tok + 1, (split + 1) * SPLIT_TOKENS)
    lo = split * SPLIT_TOKENS
    has_rows = (q_block * BLOCK_M < q_len * REP).to(tl.int32)
    hi = lo + (hi - lo) * has_rows  # a block without query rows reads no keys
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    # Keys up to the block's first token are visible to all its rows: whole tiles of them need no mask.
    first_tok = q_block * BLOCK_M // REP
    mid = tl.maximum(tl.minimum(hi, seq_len - q_len + first_tok + 1), lo)
    mid = lo + (mid - lo) // BLOCK_N * BLOCK_N
    for start in range(lo, mid, BLOCK_N):
        acc, m_i, l_i = _attend_tile(
            q, acc, m_i, l_i, k_ptr, v_ptr, tables_ptr + seq * stride_tb, kv_head * stride_kh, stride_kn,
            start, hi, q_pos, scale_log2, BS, D, BLOCK_N, IEEE, MASKED=False,
        )  # fmt: skip
    for start in range(mid, hi, BLOCK_N):
        acc, m_i, l_i = _attend_tile(
            q, acc, m_i, l_i, k_ptr, v_ptr, tables_ptr + seq * stride_tb, kv_head * stride_kh, stride_kn,
            start, hi, q_pos, scale_log2, BS, D, BLOCK_N, IEEE, MASKED=True,
        )  # fmt: skip
    n_row = q_begin + tok
    if IS_SPLIT:
        part = part_ptr + split * stride_ps + n_row[:, None] * stride_pn + head[:, None] * D + dims[None, :]
        tl.store(part, acc / tl.maximum(l_i, 1e-30)[:, None], mask=row_ok[:, None])
        lse = tl.where(l_i > 0, m_i + tl.log2(tl.maximum(l_i, 1e-30)), float("-inf"))
        tl.store(lse_ptr + split * stride_ls + n_row * stride_ln + head, lse, mask=row_ok)
    else:
        out = acc / tl.maximum(l_i, 1e-30)[:, None]
        dst = out_ptr + n_row[:, None] * stride_on + head[:, None] * D + dims[None, :]
        tl.store(dst, out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])


@triton.jit(do_not_specialize=["NUM_SPLITS"])
def _merge_kernel(
    part_ptr, lse_ptr, out_ptr, stride_ps, stride_pn, stride_ls, stride_ln, stride_on, NUM_SPLITS,
    SPLITS_P2: tl.constexpr, D: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(0)
    head = tl.program_id(1)
    splits = tl.arange(0, SPLITS_P2)
    lse = tl.load(lse_ptr + splits * stride_ls + n * stride_ln + head, mask=splits < NUM_SPLITS, other=float("-inf"))
    top = tl.max(lse, 0)
    top = tl.where(top == float("-inf"), 0.0, top)
    dims = tl.arange(0, D)
    acc = tl.zeros([D], dtype=tl.float32)
    total = tl.zeros([D], dtype=tl.float32)
    # Split by split, in order: the splits past a row's keys (lse -inf, part 0) add exact zeros, so the row's
    # bits do not depend on how many splits its launch has (`DECODE_SPLIT`).
    for split in range(NUM_SPLITS):
        weight = tl.exp2(tl.load(lse_ptr + split * stride_ls + n * stride_ln + head) - top)
        total += weight
        acc += weight * tl.load(part_ptr + split * stride_ps + n * stride_pn + head * D + dims)
    tl.store(out_ptr + n * stride_on + head * D + dims, (acc / tl.maximum(total, 1e-30)).to(out_ptr.dtype.element_ty))


MERGE_ROWS = 16  # query rows per program of `_merge_rows_kernel`
# A step with both query-block maps (a mixed step) launches them side by side on two streams; False: one after
# the other on one (`python -m bench.engine --mixed-attention` and `--ttft-ab serial` time both).
CONCURRENT_MAPS = True


@triton.jit(do_not_specialize=["NUM_SPLITS"])
def _merge_rows_kernel(
    part_ptr, lse_ptr, out_ptr, q_start_ptr, q_blocks_ptr, stride_ps, stride_pn, stride_ls, stride_ln, stride_on,
    NUM_SPLITS, REP: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, MERGE_M: tl.constexpr,
):  # fmt: skip
    """`_merge_kernel` over the rows of a mapped launch's programs only (`MERGE_M` of a program's `BLOCK_M`
    rows each), so that another launch over other rows may run beside it."""
    seq = tl.load(q_blocks_ptr + 2 * tl.program_id(0))
    q_block = tl.load(q_blocks_ptr + 2 * tl.program_id(0) + 1)
    kv_head = tl.program_id(1)
    q_begin = tl.load(q_start_ptr + seq)
    q_len = tl.load(q_start_ptr + seq + 1) - q_begin
    rows = q_block * BLOCK_M + tl.program_id(2) * MERGE_M + tl.arange(0, MERGE_M)
    row_ok = rows < q_len * REP
    n_row = q_begin + rows // REP
    head = kv_head * REP + rows % REP
    lse_rows = lse_ptr + n_row * stride_ln + head
    part_rows = part_ptr + n_row[:, None] * stride_pn + head[:, None] * D + tl.arange(0, D)[None, :]
    top = tl.full([MERGE_M], float("-inf"), dtype=tl.float32)
    for split in range(NUM_SPLITS):
        top = tl.maximum(top, tl.load(lse_rows + split * stride_ls, mask=row_ok, other=float("-inf")))
    top = tl.where(top == float("-inf"), 0.0, top)
    acc = tl.zeros([MERGE_M, D], dtype=tl.float32)
    total = tl.zeros([MERGE_M], dtype=tl.float32)
    # Split by split, in order: the splits past a row's keys (lse -inf, part 0) add exact zeros, so the row's
    # bits do not depend on how many splits its launch has (`DECODE_SPLIT`).
    for split in range(NUM_SPLITS):
        weight = tl.exp2(tl.load(lse_rows + split * stride_ls, mask=row_ok, other=float("-inf")) - top)
        total += weight
        acc += weight[:, None] * tl.load(part_rows + split * stride_ps, mask=row_ok[:, None], other=0.0)
    out = (acc / tl.maximum(total, 1e-30)[:, None]).to(out_ptr.dtype.element_ty)
    dst = out_ptr + n_row[:, None] * stride_on + head[:, None] * D + tl.arange(0, D)[None, :]
    tl.store(dst, out, mask=row_ok[:, None])


def paged_attention(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    block_tables: Tensor,
    query_start: Tensor,
    seq_lens: Tensor,
    block_size: int,
    max_q_len: int,
    num_sms: int,
    tiles: Tiles | None = None,
    q_blocks: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """q [N, Hq, D] (new tokens, flat by sequence); caches [slots, Hkv, D] already hold the new k, v.

    query_start [B+1] int: sequence b's queries are rows query_start[b]..query_start[b+1]-1, the
    last positions of its context of seq_lens[b] tokens. Returns [N, Hq * D] in q's dtype.
    q_blocks (ragged steps, `query_blocks`): the [P, 2] maps of the 16-row programs and of the prefill
    tile's; each is one launch, and only blocks that hold query rows run.
    """
    out = torch.empty(q.shape[0], q.shape[1] * q.shape[2], dtype=q.dtype, device=q.device)
    tiles = tiles or tiles_for(q.dtype)
    args = (q, k_cache, v_cache, out, block_tables, query_start, seq_lens, block_size, num_sms, tiles)
    if q_blocks is None:
        _launch(*args, max_q_len, None, can_split=True)
        return out
    small, big = q_blocks
    if not small.shape[0]:
        _launch(*args, max_q_len, big, can_split=True)
        return out
    if not big.shape[0]:
        _launch(*args, 1, small, can_split=True)
        return out
    # Both: the 16-row programs beside the prefill tiles, on a second stream (each launch and its merge write
    # only their own rows). Alone, a short chunk's prefill launch leaves most SMs idle (few programs, one split
    # at a short context) and the decoding rows' launch would wait for it. Their context is short beside the
    # prompt's, so they run unsplit (splits are sized by the block table's width, the prompt's).
    if not q.is_cuda or not CONCURRENT_MAPS:  # (not CUDA: Triton's interpreter)
        _launch(*args, 1, small, can_split=False)
        _launch(*args, max_q_len, big, can_split=True, own_rows=True)
        return out
    main, side = torch.cuda.current_stream(q.device), _side_stream(q.device)
    side.wait_stream(main)
    with torch.cuda.stream(side):
        _launch(*args, 1, small, can_split=False)
    _launch(*args, max_q_len, big, can_split=True, own_rows=True)
    main.wait_stream(side)
    return out


@functools.cache
def _side_stream(device: torch.device) -> torch.cuda.Stream:
    return torch.cuda.Stream(device)


def _launch(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    out: Tensor,
    block_tables: Tensor,
    query_start: Tensor,
    seq_lens: Tensor,
    block_size: int,
    num_sms: int,
    tiles: Tiles,
    max_q_len: int,
    q_map: Tensor | None,
    can_split: bool,
    own_rows: bool = False,
) -> None:
    """One launch of the kernel over all sequences' blocks, or over the blocks of `q_map` only. `own_rows`: its
    merge (if split) writes only the map's rows (`_merge_kernel` writes every row: the same bits as ever for
    decode and verify rows, whatever launch they are in)."""
    num_tokens, num_q_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[1]
    rep = num_q_heads // num_kv_heads
    num_seqs = block_tables.shape[0]
    num_mapped = None if q_map is None else q_map.shape[0]
    max_context = block_tables.shape[1] * block_size
    p = plan(num_seqs, num_kv_heads, rep, max_q_len, max_context, num_sms, tiles, num_mapped, can_split)
    is_split = p.num_splits > 1
    if is_split:
        part = torch.empty(p.num_splits, num_tokens, num_q_heads * head_dim, dtype=torch.float32, device=q.device)
        lse = torch.empty(p.num_splits, num_tokens, num_q_heads, dtype=torch.float32, device=q.device)
    else:
        part = lse = out  # unused
    scale_log2 = LOG2E / head_dim**0.5
    grid = (num_seqs * p.num_q_blocks if num_mapped is None else num_mapped, num_kv_heads, p.num_splits)
    _attn_kernel[grid](
        q, k_cache, v_cache, out, part, lse, block_tables, query_start, seq_lens,
        query_start if q_map is None else q_map,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), block_tables.stride(0), out.stride(0),
        part.stride(0), part.stride(1), lse.stride(0), lse.stride(1),
        scale_log2, p.num_q_blocks, p.split_tokens,
        REP=rep, BS=block_size, D=head_dim, BLOCK_M=p.block_m, BLOCK_N=p.block_n,
        IS_SPLIT=is_split, IEEE=q.dtype == torch.float32, HAS_MAP=q_map is not None,
        num_warps=p.num_warps, num_stages=p.num_stages,
    )  # fmt: skip
    if is_split and not own_rows:
        _merge_kernel[(num_tokens, num_q_heads)](
            part, lse, out, part.stride(0), part.stride(1), lse.stride(0), lse.stride(1), out.stride(0), p.num_splits,
            SPLITS_P2=triton.next_power_of_2(p.num_splits), D=head_dim, num_warps=2,
        )  # fmt: skip
    elif is_split:
        assert q_map is not None
        _merge_rows_kernel[(grid[0], num_kv_heads, p.block_m // MERGE_ROWS)](
            part, lse, out, query_start, q_map, part.stride(0), part.stride(1), lse.stride(0), lse.stride(1),
            out.stride(0), p.num_splits, REP=rep, D=head_dim, BLOCK_M=p.block_m, MERGE_M=MERGE_ROWS, num_warps=4,
        )  # fmt: skip


@triton.jit
def _rope_store_kernel(
    qkv_ptr, cos_ptr, sin_ptr, q_out_ptr, k_ptr, v_ptr, slot_ptr,
    stride_qkv, stride_cos, stride_qo, stride_kn,
    NUM_Q: tl.constexpr, NUM_KV: tl.constexpr, HEADS_P2: tl.constexpr, D: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(0)
    heads = tl.arange(0, HEADS_P2)
    dims = tl.arange(0, D)
    rolled = (dims + D // 2) % D
    is_qk = heads < NUM_Q + NUM_KV
    base = qkv_ptr + n * stride_qkv + heads[:, None] * D
    x = tl.load(base + dims[None, :], mask=is_qk[:, None], other=0.0).to(tl.float32)
    x_rolled = tl.load(base + rolled[None, :], mask=is_qk[:, None], other=0.0).to(tl.float32)
    cos = tl.load(cos_ptr + n * stride_cos + dims).to(tl.float32)
    sin = tl.load(sin_ptr + n * stride_cos + dims).to(tl.float32)
    y = (x * cos[None, :] + x_rolled * sin[None, :]).to(q_out_ptr.dtype.element_ty)
    is_q = heads < NUM_Q
    tl.store(q_out_ptr + n * stride_qo + heads[:, None] * D + dims[None, :], y, mask=is_q[:, None])
    slot = tl.load(slot_ptr + n).to(tl.int64)
    is_k = (heads >= NUM_Q) & is_qk
    kv_head = tl.where(is_k, heads - NUM_Q, 0)
    tl.store(k_ptr + slot * stride_kn + kv_head[:, None] * D + dims[None, :], y, mask=is_k[:, None])
    v_heads = tl.arange(0, HEADS_P2)
    v_ok = v_heads < NUM_KV
    v = tl.load(qkv_ptr + n * stride_qkv + (NUM_Q + NUM_KV + v_heads[:, None]) * D + dims[None, :], mask=v_ok[:, None])
    tl.store(v_ptr + slot * stride_kn + v_heads[:, None] * D + dims[None, :], v, mask=v_ok[:, None])


def rope_and_store(
    qkv: Tensor, cos: Tensor, sin_signed: Tensor, slots: Tensor, k_cache: Tensor, v_cache: Tensor, num_q_heads: int
) -> Tensor:
    """qkv [N, (Hq + 2 Hkv) D] -> rotated q [N, Hq, D]; rotated k and v are written to the caches at slots.

    cos, sin_signed [N, D] (rows per token): the same rotate-half RoPE as `layers.rotary`, in fp32.
    """
    num_tokens = qkv.shape[0]
    num_kv, head_dim = k_cache.shape[1], k_cache.shape[2]
    q = torch.empty(num_tokens, num_q_heads, head_dim, dtype=qkv.dtype, device=qkv.device)
    _rope_store_kernel[(num_tokens,)](
        qkv, cos, sin_signed, q, k_cache, v_cache, slots,
        qkv.stride(0), cos.stride(0), q.stride(0), k_cache.stride(0),
        NUM_Q=num_q_heads, NUM_KV=num_kv, HEADS_P2=triton.next_power_of_2(num_q_heads + num_kv), D=head_dim,
        num_warps=4,
    )  # fmt: skip
    return q
