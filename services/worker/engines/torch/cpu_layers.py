"""The decoder layer on CPU: oneDNN linears over weights reordered once into oneDNN's blocked layout.

Same math as `layers.layer_forward`'s exact path (same norms, RoPE and gather attention); only the GEMMs
differ. On this machine's CPUs (AMD, AVX-512) ATen's fp32 `F.linear` goes through MKL, which is about
half as fast as oneDNN with a prepacked weight at 16-64 rows; in bf16 the prepacked weight still saves
the per-call reorder and the residual add (a binary post-op). Results differ from `F.linear` only by
summation order (fp32: ~1e-5 relative; bf16: bit-equal on the shapes tested).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from services.worker.engines.torch.attention import AttnMeta, paged_attention
from services.worker.engines.torch.layers import LayerWeights, rms_norm, rotary, silu_mul

log = logging.getLogger(__name__)

PACK_BATCH_HINT = 64  # rows oneDNN picks its blocked layout for; any row count works


class PackedLinear:
    """y = x W^T + b (+ residual) through oneDNN, W reordered once.

    The reordered copy is rebuilt when W changes in place (an UpdateWeights install copies into the
    served tensors; views share their base's version counter), so it never serves stale weights.
    """

    __slots__ = ("_packed", "_version", "bias", "weight")

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        self.weight, self.bias = weight, bias
        self._version = -1
        self._packed = weight
        self._repack_if_changed()

    def _repack_if_changed(self) -> None:
        version = self.weight._version + (0 if self.bias is None else self.bias._version)
        if version != self._version:
            self._packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, PACK_BATCH_HINT)
            self._version = version

    def __call__(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """x: [N, K] -> [N, M]; with `residual` [N, M], returns x W^T + b + residual (one oneDNN call)."""
        self._repack_if_changed()
        if residual is None:
            return torch.ops.mkldnn._linear_pointwise(x, self._packed, self.bias, "none", [None], "")
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self._packed, self.bias, "add")


def packed_linear_works(dtype: torch.dtype) -> bool:
    """oneDNN is built in and agrees with F.linear (with and without the residual post-op) in this dtype."""
    if not torch.backends.mkldnn.is_available() or dtype not in (torch.float32, torch.bfloat16):
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        w, b = torch.randn(24, 40, generator=gen).to(dtype), torch.randn(24, generator=gen).to(dtype)
        x, r = torch.randn(5, 40, generator=gen).to(dtype), torch.randn(5, 24, generator=gen).to(dtype)
        linear = PackedLinear(w, b)
        tol = 1e-4 if dtype == torch.float32 else 3e-2
        ok = torch.allclose(linear(x).float(), F.linear(x, w, b).float(), rtol=tol, atol=tol)
        return ok and torch.allclose(linear(x, r).float(), (F.linear(x, w, b) + r).float(), rtol=tol, atol=tol)
    except (RuntimeError, AttributeError):  # a torch built without the mkldnn ops
        log.warning("oneDNN packed linear unavailable; CPU layers use F.linear", exc_info=True)
        return False


@dataclass(frozen=True, slots=True)
class CpuLayer:
    """One decoder layer's norms and packed projections (over the same tensors as its `LayerWeights`)."""

    w: LayerWeights
    qkv: PackedLinear
    o: PackedLinear
    gate_up: PackedLinear
    down: PackedLinear

    @classmethod
    def of(cls, w: LayerWeights) -> CpuLayer:
        return cls(
            w,
            PackedLinear(w.qkv_weight, w.qkv_bias),
            PackedLinear(w.o_weight),
            PackedLinear(w.gate_up_weight),
            PackedLinear(w.down_weight),
        )


def cpu_layer_forward(
    layer: CpuLayer, x: Tensor, cos: Tensor, sin_signed: Tensor, k_cache: Tensor, v_cache: Tensor, meta: AttnMeta
) -> Tensor:
    """`layers.layer_forward`'s exact path with packed GEMMs. x: [N, H] -> [N, H]; cos, sin_signed: [N, 1, D]."""
    w = layer.w
    num_tokens, d = x.shape[0], w.head_dim
    q_dim, kv_dim = w.num_q_heads * d, w.num_kv_heads * d
    qkv = layer.qkv(rms_norm(x, w.norm1, w.eps))  # [N, q + 2 kv]
    qk = rotary(qkv[:, : q_dim + kv_dim].view(num_tokens, -1, d), cos, sin_signed)  # [N, Hq + Hkv, D]
    v = qkv[:, q_dim + kv_dim :].view(num_tokens, -1, d)
    upcast = x.dtype == torch.bfloat16 and meta.pad_index is None  # uniform bf16 steps attend in fp32
    out = paged_attention(qk[:, : w.num_q_heads], qk[:, w.num_q_heads :], v, k_cache, v_cache, meta, upcast)
    x = layer.o(out, x)  # the residual add as oneDNN's post-op
    return layer.down(silu_mul(layer.gate_up(rms_norm(x, w.norm2, w.eps))), x)
