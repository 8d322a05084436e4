"""Paged attention metadata, and the exact PyTorch path (CPU, tests): context gathered through block tables.

On CUDA the engine uses `kernels.paged_attention` (Triton, reads the cache in place) with a
`KernelMeta`; the gather + masked SDPA below is the simple reference it is tested against.
The step's new tokens are flat ([N, ...]); each sequence's context is gathered from the paged cache
through its block table, and queries attend with a causal mask on absolute positions. Sequences
with equal numbers of new tokens (decode, MTP verify) need no padding and can be CUDA-graphed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True, slots=True)
class StepTensors:
    """The inputs of one forward, on the model's device. N new tokens over B sequences."""

    input_ids: Tensor  # [N] int64
    positions: Tensor  # [N] int64
    slot_mapping: Tensor  # [N] int64: where each token's k, v go
    block_tables: Tensor  # [B, M] int64, padded with the scratch block
    pad_index: Tensor | None = None  # [B*T] rows of the new tokens (N: a padding row), None if uniform
    unpad_index: Tensor | None = None  # [N] rows of the padded [B*T] layout
    use_graph: bool = False  # padded to a CUDA-graph shape (uniform decode or verify; with q_blocks, a ragged one)
    query_start: Tensor | None = None  # [B+1] kernel path, ragged steps: sequence b's rows start..end (else uniform)
    max_query_len: int = 1  # new tokens of the longest sequence (the kernel's launch shape)
    q_blocks: tuple[Tensor, Tensor] | None = None  # kernel path, ragged steps: the programs (`query_blocks`)


@dataclass(frozen=True, slots=True)
class AttnMeta:
    slot_mapping: Tensor  # [N]
    context_slots: Tensor  # [B, S] slots of positions 0..S-1 of each sequence
    mask: Tensor  # [B, 1, rep*T or 1, S] additive (0 or -inf): query t may see context position s
    pad_index: Tensor | None
    unpad_index: Tensor | None


@dataclass(frozen=True, slots=True)
class KernelMeta:
    """The Triton path's metadata: block tables read in place, no gathered slots, no mask."""

    slot_mapping: Tensor  # [N]
    block_tables: Tensor  # [B, M]
    query_start: Tensor  # [B+1]
    seq_lens: Tensor  # [B] context length after this step's tokens
    block_size: int
    max_query_len: int
    num_sms: int
    q_blocks: tuple[Tensor, Tensor] | None = None


def kernel_meta(step: StepTensors, block_size: int, num_sms: int) -> KernelMeta:
    """Uniform steps (graphs) derive the row starts from the shapes; every sequence's queries end its context."""
    num_seqs = step.block_tables.shape[0]
    num_q = step.max_query_len
    query_start = step.query_start
    if query_start is None:
        num_q = step.positions.shape[0] // num_seqs
        query_start = torch.arange(0, num_seqs * num_q + 1, num_q, device=step.positions.device)
    seq_lens = step.positions[query_start[1:] - 1] + 1
    return KernelMeta(
        step.slot_mapping, step.block_tables, query_start, seq_lens, block_size, num_q, num_sms, step.q_blocks
    )


def attn_meta(step: StepTensors, block_size: int, num_q_per_kv: int, dtype: torch.dtype) -> AttnMeta:
    """Device-side metadata shared by every layer of a forward (graph-capturable: no host syncs)."""
    num_seqs, num_cols = step.block_tables.shape
    offsets = torch.arange(block_size, device=step.block_tables.device)
    context_slots = (step.block_tables[:, :, None] * block_size + offsets).view(num_seqs, num_cols * block_size)
    if step.pad_index is None:
        q_pos = step.positions.view(num_seqs, -1)  # [B, T]
    else:
        q_pos = F.pad(step.positions, (0, 1))[step.pad_index].view(num_seqs, -1)  # padding rows: position 0
    key_pos = torch.arange(context_slots.shape[1], device=q_pos.device)
    allowed = key_pos[None, None, :] <= q_pos[:, :, None]  # [B, T, S]
    num_seqs, num_q, num_ctx = allowed.shape
    if num_q > 1:  # queries are folded as (rep, T) per kv head: repeat the mask rep times
        allowed = allowed[:, None].expand(-1, num_q_per_kv, -1, -1).reshape(num_seqs, num_q_per_kv * num_q, num_ctx)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))
    return AttnMeta(step.slot_mapping, context_slots, mask[:, None], step.pad_index, step.unpad_index)


def paged_attention(
    q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, meta: AttnMeta, upcast: bool = False
) -> Tensor:
    """q: [N, Hq, D], k, v: [N, Hkv, D]; caches: [num_slots, Hkv, D]. Writes k, v, returns [N, Hq * D] in q's dtype.

    `upcast`: attend in fp32 over the gathered context (CPU bf16 decode: ATen's CPU flash kernel is ~2x slower in
    bf16 on small heads and accumulates in fp32 either way; the upcast costs one pass over the context)."""
    k_cache.index_copy_(0, meta.slot_mapping, k)
    v_cache.index_copy_(0, meta.slot_mapping, v)
    num_seqs = meta.context_slots.shape[0]
    num_kv, head_dim = k.shape[1], k.shape[2]
    rep = q.shape[1] // num_kv  # GQA: query heads h*rep .. h*rep+rep-1 share kv head h
    num_q = (q.shape[0] if meta.pad_index is None else meta.pad_index.shape[0]) // num_seqs
    if meta.pad_index is not None:
        q = F.pad(q, (0, 0, 0, 0, 0, 1))[meta.pad_index]  # [B*T, Hq, D]
    # Fold each kv head's query heads into the query axis: [B, Hkv, rep*T, D], no repeated k, v.
    qh = (
        q.view(num_seqs, num_q, num_kv, rep, head_dim)
        .permute(0, 2, 3, 1, 4)
        .reshape(num_seqs, num_kv, rep * num_q, head_dim)
    )
    # One index_select per cache (rows are copied whole; advanced indexing copies element by element, ~5x
    # slower on CPU at batch 64): [B*S, Hkv, D] -> [B, Hkv, S, D].
    slots = meta.context_slots.view(-1)
    kh = k_cache.index_select(0, slots).view(num_seqs, -1, num_kv, head_dim).transpose(1, 2)
    vh = v_cache.index_select(0, slots).view(num_seqs, -1, num_kv, head_dim).transpose(1, 2)
    mask = meta.mask
    if upcast:
        qh, kh, vh, mask = qh.float(), kh.float(), vh.float(), mask.float()
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask).to(q.dtype)  # [B, Hkv, rep*T, D]
    out = out.view(num_seqs, num_kv, rep, num_q, head_dim).permute(0, 3, 1, 2, 4).reshape(num_seqs * num_q, -1)
    return out if meta.unpad_index is None else out[meta.unpad_index]
