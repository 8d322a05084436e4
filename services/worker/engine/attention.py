"""Paged attention in plain PyTorch, and a decoder-layer forward over MiMo's own modules and weights.

The step's new tokens are flat ([N, ...]); each sequence's context is gathered from the paged cache
through its block table, and queries attend with a causal mask on absolute positions. Sequences
with equal numbers of new tokens (decode, MTP verify) need no padding and can be CUDA-graphed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True, slots=True)
class StepTensors:
    """The inputs of one forward, on the model's device. N new tokens over B sequences."""

    input_ids: Tensor  # [N] int64
    positions: Tensor  # [N] int64
    slot_mapping: Tensor  # [N] int64: where each token's k, v go
    block_tables: Tensor  # [B, M] int64, padded with the scratch block
    pad_index: Tensor | None = None  # [B*T] rows of the new tokens (N: a padding row), None if uniform
    unpad_index: Tensor | None = None  # [N] rows of the padded [B*T] layout
    use_graph: bool = False  # padded to a CUDA-graph shape (uniform decode or verify)


@dataclass(frozen=True, slots=True)
class AttnMeta:
    slot_mapping: Tensor  # [N]
    context_slots: Tensor  # [B, S] slots of positions 0..S-1 of each sequence
    mask: Tensor  # [B, 1, T, S] bool: query t may see context position s
    pad_index: Tensor | None
    unpad_index: Tensor | None


def attn_meta(step: StepTensors, block_size: int) -> AttnMeta:
    """Device-side metadata shared by every layer of a forward (graph-capturable: no host syncs)."""
    num_seqs, num_cols = step.block_tables.shape
    offsets = torch.arange(block_size, device=step.block_tables.device)
    context_slots = (step.block_tables[:, :, None] * block_size + offsets).view(num_seqs, num_cols * block_size)
    if step.pad_index is None:
        q_pos = step.positions.view(num_seqs, -1)  # [B, T]
    else:
        q_pos = F.pad(step.positions, (0, 1))[step.pad_index].view(num_seqs, -1)  # padding rows: position 0
    key_pos = torch.arange(context_slots.shape[1], device=q_pos.device)
    mask = (key_pos[None, None, :] <= q_pos[:, :, None])[:, None]  # [B, 1, T, S]
    return AttnMeta(step.slot_mapping, context_slots, mask, step.pad_index, step.unpad_index)


def paged_attention(q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, meta: AttnMeta) -> Tensor:
    """q: [N, Hq, D], k, v: [N, Hkv, D]; caches: [num_slots, Hkv, D]. Writes k, v, returns [N, Hq * D]."""
    k_cache.index_copy_(0, meta.slot_mapping, k)
    v_cache.index_copy_(0, meta.slot_mapping, v)
    num_seqs, _, num_q, num_ctx = meta.mask.shape
    num_kv, head_dim = k.shape[1], k.shape[2]
    rep = q.shape[1] // num_kv  # GQA: query heads h*rep .. h*rep+rep-1 share kv head h
    if meta.pad_index is not None:
        q = F.pad(q, (0, 0, 0, 0, 0, 1))[meta.pad_index]  # [B*T, Hq, D]
    # Fold each kv head's query heads into the query axis: [B, Hkv, rep*T, D], no repeated k, v.
    qh = (
        q.view(num_seqs, num_q, num_kv, rep, head_dim)
        .permute(0, 2, 3, 1, 4)
        .reshape(num_seqs, num_kv, rep * num_q, head_dim)
    )
    kh = k_cache[meta.context_slots].transpose(1, 2)  # [B, Hkv, S, D]
    vh = v_cache[meta.context_slots].transpose(1, 2)
    mask = (
        meta.mask
        if num_q == 1
        else meta.mask[:, :, None].expand(-1, -1, rep, -1, -1).reshape(num_seqs, 1, rep * num_q, num_ctx)
    )
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)  # [B, Hkv, rep*T, D]
    out = out.view(num_seqs, num_kv, rep, num_q, head_dim).permute(0, 3, 1, 2, 4).reshape(num_seqs * num_q, -1)
    return out if meta.unpad_index is None else out[meta.unpad_index]


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate-half RoPE. x: [N, H, D]; cos, sin: [N, 1, D]."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def attention_forward(
    attn: nn.Module, x: Tensor, cos: Tensor, sin: Tensor, k_cache: Tensor, v_cache: Tensor, meta: AttnMeta
) -> Tensor:
    """MiMo's Attention module (q/k/v/o projections) over the paged cache. x: [N, H] -> [N, H]."""
    head_dim = k_cache.shape[-1]
    q = attn.q_proj(x).view(x.shape[0], -1, head_dim)
    k = attn.k_proj(x).view(x.shape[0], -1, head_dim)
    v = attn.v_proj(x).view(x.shape[0], -1, head_dim)
    out = paged_attention(rotate(q, cos, sin), rotate(k, cos, sin), v, k_cache, v_cache, meta)
    return attn.o_proj(out)


def decoder_layer_forward(
    layer: nn.Module, x: Tensor, cos: Tensor, sin: Tensor, k_cache: Tensor, v_cache: Tensor, meta: AttnMeta
) -> Tensor:
    """One pre-norm Qwen2 block (also the MTP block): x += attn(norm(x)); x += mlp(norm(x))."""
    x = x + attention_forward(layer.self_attn, layer.input_layernorm(x), cos, sin, k_cache, v_cache, meta)
    return x + layer.mlp(layer.post_attention_layernorm(x))
