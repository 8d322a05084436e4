"""MiMo's decoder layer as few GPU kernels: fused q|k|v and gate|up weights, and elementwise pieces that
`torch.compile` can fuse further. Same math as the model's own modules (Qwen2 RMSNorm, rotate-half RoPE).

A decode step is ~36 layers of small kernels, and each costs a few microseconds even inside a CUDA
graph, so the kernel count, not only the bytes, decides batch-1 speed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from services.worker.engines.torch.attention import AttnMeta, KernelMeta, paged_attention
from services.worker.model.mimo import DecoderLayer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LayerWeights:
    """One decoder layer's weights; q|k|v and gate|up are single matrices (the modules hold views of them)."""

    norm1: Tensor
    norm2: Tensor
    eps: float
    qkv_weight: Tensor  # [(Hq + 2 Hkv) D, H]
    qkv_bias: Tensor | None
    o_weight: Tensor
    gate_up_weight: Tensor  # [2 I, H]
    down_weight: Tensor
    num_q_heads: int
    num_kv_heads: int
    head_dim: int


def _repoint(linear: nn.Linear, weight: Tensor, bias: Tensor | None) -> None:
    linear.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        linear.bias = nn.Parameter(bias, requires_grad=False)


def fuse_layer(layer: DecoderLayer, num_q_heads: int, num_kv_heads: int, head_dim: int) -> LayerWeights:
    """Concatenate the projections once; the modules are re-pointed at views, so memory is not doubled."""
    attn, mlp = layer.self_attn, layer.mlp
    projections = (attn.q_proj, attn.k_proj, attn.v_proj)
    qkv = torch.cat([p.weight.detach() for p in projections])
    bias = torch.cat([p.bias.detach() for p in projections]) if attn.q_proj.bias is not None else None
    gate_up = torch.cat([mlp.gate_proj.weight.detach(), mlp.up_proj.weight.detach()])
    start = 0
    for p in projections:
        rows = p.weight.shape[0]
        _repoint(p, qkv[start : start + rows], None if bias is None else bias[start : start + rows])
        start += rows
    num_inter = mlp.gate_proj.weight.shape[0]
    _repoint(mlp.gate_proj, gate_up[:num_inter], None)
    _repoint(mlp.up_proj, gate_up[num_inter:], None)
    return LayerWeights(
        norm1=layer.input_layernorm.weight.detach(),
        norm2=layer.post_attention_layernorm.weight.detach(),
        eps=layer.input_layernorm.eps,
        qkv_weight=qkv,
        qkv_bias=bias,
        o_weight=attn.o_proj.weight.detach(),
        gate_up_weight=gate_up,
        down_weight=mlp.down_proj.weight.detach(),
        num_q_heads=num_q_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
    )


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """Qwen2's RMSNorm: normalise in fp32, cast back, scale (ATen's rms_norm does exactly this)."""
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def rotary(x: Tensor, cos: Tensor, sin_signed: Tensor) -> Tensor:
    """Rotate-half RoPE as x*cos + roll(x)*sin', with sin' = sin with its first half negated. x: [N, H, D]."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin_signed)


def add_norm(x: Tensor, delta: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """The residual stream after `delta` is added, and its RMSNorm (one kernel once compiled)."""
    x = x + delta
    return x, rms_norm(x, weight, eps)


def silu_mul(gate_up: Tensor) -> Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


@dataclass(frozen=True, slots=True)
class Kernels:
    """The elementwise pieces of a layer, eager or `torch.compile`d (fused into a few Triton kernels)."""

    norm: Callable[[Tensor, Tensor, float], Tensor] = rms_norm
    rotary: Callable[[Tensor, Tensor, Tensor], Tensor] = rotary
    silu_mul: Callable[[Tensor], Tensor] = silu_mul
    add_norm: Callable[[Tensor, Tensor, Tensor, float], tuple[Tensor, Tensor]] = add_norm
    linear: Callable[[Tensor, Tensor, Tensor | None], Tensor] = F.linear

    @classmethod
    def compiled(cls, sample: Tensor, rowwise: bool = False) -> Kernels:
        """Compiled pieces if they compile and agree with eager on `sample` [N, H]; eager ones otherwise.
        On CUDA with Triton the linears of 1-16 rows use the GEMV kernels (`kernels/gemv.py`), `rowwise`
        for an MTP model (each row's result the same whatever the other rows)."""
        try:
            jit = partial(torch.compile, dynamic=True)
            linear: Callable[[Tensor, Tensor, Tensor | None], Tensor] = F.linear
            if sample.is_cuda:
                from services.worker.engines.torch.kernels import gemv

                linear = partial(gemv.linear, rowwise=rowwise)
            compiled = cls(jit(rms_norm), jit(rotary), jit(silu_mul), jit(add_norm), linear)
            ones = torch.ones(sample.shape[-1], dtype=sample.dtype, device=sample.device)
            heads = sample.view(sample.shape[0], -1, 8)
            cos = torch.ones(8, dtype=sample.dtype, device=sample.device)
            for fast, slow, args in (
                (compiled.norm, rms_norm, (sample, ones, 1e-6)),
                (compiled.rotary, rotary, (heads, cos, cos)),
                (compiled.silu_mul, silu_mul, (sample,)),
                (lambda *a: compiled.add_norm(*a)[1], lambda *a: add_norm(*a)[1], (sample, sample, ones, 1e-6)),
                (compiled.linear, F.linear, (sample[:1], sample * sample.shape[-1] ** -0.5, None)),
            ):
                if not torch.allclose(fast(*args), slow(*args), rtol=1e-2, atol=1e-2):
                    raise RuntimeError(f"compiled {slow.__name__} disagrees with eager")
            return compiled
        except Exception:  # no compiler, no Triton, or a backend bug: stay correct and eager
            log.warning("torch.compile of the layer kernels failed; running them eagerly", exc_info=True)
            return cls()


def layer_forward(
    w: LayerWeights,
    k: Kernels,
    x: Tensor,
    delta: Tensor | None,
    cos: Tensor,
    sin_signed: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    meta: AttnMeta | KernelMeta,
) -> tuple[Tensor, Tensor]:
    """One pre-norm Qwen2 block over the paged cache. x: [N, H] is the residual stream before the previous
    block's output `delta` (None for the first) is added: each add is fused into the next norm, so the
    GEMMs write plain outputs (no residual copy into them). Returns (x, this block's MLP output)."""
    num_tokens, d = x.shape[0], w.head_dim
    q_dim, kv_dim = w.num_q_heads * d, w.num_kv_heads * d
    if delta is None:
        normed = k.norm(x, w.norm1, w.eps)
    else:
        x, normed = k.add_norm(x, delta, w.norm1, w.eps)
    qkv = k.linear(normed, w.qkv_weight, w.qkv_bias)  # [N, q + 2 kv]
    if isinstance(meta, KernelMeta):
        from services.worker.engines.torch.kernels import paged_attention as kernels

        q = kernels.rope_and_store(qkv, cos, sin_signed, meta.slot_mapping, k_cache, v_cache, w.num_q_heads)
        out = kernels.paged_attention(
            q, k_cache, v_cache, meta.block_tables, meta.query_start, meta.seq_lens,
            meta.block_size, meta.max_query_len, meta.num_sms, q_blocks=meta.q_blocks,
        )  # fmt: skip
    else:
        qk = k.rotary(qkv[:, : q_dim + kv_dim].view(num_tokens, -1, d), cos, sin_signed)  # [N, Hq + Hkv, D]
        v = qkv[:, q_dim + kv_dim :].view(num_tokens, -1, d)
        out = paged_attention(qk[:, : w.num_q_heads], qk[:, w.num_q_heads :], v, k_cache, v_cache, meta)
    x, normed = k.add_norm(x, k.linear(out, w.o_weight, None), w.norm2, w.eps)
    return x, k.linear(k.silu_mul(k.linear(normed, w.gate_up_weight, None)), w.down_weight, None)
