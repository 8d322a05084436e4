"""MiMo in plain PyTorch: a Qwen2 decoder plus MiMo's multi-token-prediction (MTP) layer."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True, slots=True)
class MiMoConfig:
    """The fields of a HF MiMo `config.json` that the model uses (MiMoConfig = Qwen2Config + MTP)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int = 32768
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    hidden_act: str = "silu"
    attention_bias: bool = True
    tie_word_embeddings: bool = False
    num_nextn_predict_layers: int = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    torch_dtype: str = "bfloat16"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MiMoConfig:
        """Keep the known keys; Qwen2 configs may omit head_dim and attention_bias."""
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in raw.items() if k in names and v is not None}
        known.setdefault("head_dim", raw["hidden_size"] // raw["num_attention_heads"])
        known.setdefault("num_key_value_heads", raw["num_attention_heads"])
        if isinstance(known.get("eos_token_id"), list):  # HF allows a list of stop ids
            known["eos_token_id"] = known["eos_token_id"][0]
        if known.get("hidden_act", "silu") != "silu":
            raise ValueError(f"unsupported hidden_act {known['hidden_act']!r}")
        return cls(**known)

    @classmethod
    def from_json(cls, path: str | Path) -> MiMoConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_hf_dict(self) -> dict[str, Any]:
        """A HF `config.json` body for `MiMoForCausalLM` with every Qwen2 field present."""
        return {
            "architectures": ["MiMoForCausalLM"],
            "model_type": "mimo",
            **dataclasses.asdict(self),
            "initializer_range": 0.02,
            "use_cache": True,
            "use_sliding_window": False,
            "sliding_window": self.max_position_embeddings,
            "max_window_layers": self.num_hidden_layers,
        }


@dataclass(slots=True)
class KVCache:
    """Keys and values of one attention layer for the tokens seen so far.

    The buffers grow by doubling, so appending one token at a time copies O(1) per token amortised.
    """

    k_buffer: Tensor | None = None  # [B, H_kv, capacity, D]
    v_buffer: Tensor | None = None  # [B, H_kv, capacity, D]
    num_tokens: int = 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add the new tokens' k, v: [B, H_kv, T, D]; return all of them: [B, H_kv, S, D] (views)."""
        end = self.num_tokens + k.shape[2]
        if self.k_buffer is None or end > self.k_buffer.shape[2]:
            capacity = max(end, 64, 0 if self.k_buffer is None else 2 * self.k_buffer.shape[2])
            self.k_buffer, self.v_buffer = (
                self._grown(self.k_buffer, k, capacity),
                self._grown(self.v_buffer, v, capacity),
            )
        assert self.v_buffer is not None
        self.k_buffer[:, :, self.num_tokens : end] = k
        self.v_buffer[:, :, self.num_tokens : end] = v
        self.num_tokens = end
        return self.k_buffer[:, :, :end], self.v_buffer[:, :, :end]

    def _grown(self, old: Tensor | None, new: Tensor, capacity: int) -> Tensor:
        buffer = new.new_empty(new.shape[0], new.shape[1], capacity, new.shape[3])
        if old is not None:
            buffer[:, :, : self.num_tokens] = old[:, :, : self.num_tokens]
        return buffer


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in fp32 like Qwen2, scale in the input dtype.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rotary_cos_sin(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos, sin for rotate-half RoPE. positions: [B, T] -> each [B, 1, T, D]."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim
    inv_freq = 1.0 / (theta**exponents)  # [D/2]
    freqs = positions.float()[..., None] * inv_freq  # [B, T, D/2]
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # [B, 1, T, D]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    # x: [B, H, T, D]
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def causal_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None) -> Tensor:
    """q: [B, Hq, T, D] are the LAST T of the S positions in k, v: [B, Hkv, S, D] -> [B, Hq, T, D].

    key_mask: [B, S], False for padding keys (e.g. left padding of a batch of prompts).
    """
    num_new, num_all = q.shape[2], k.shape[2]
    # GQA: kv head j serves query heads [j*rep, (j+1)*rep), as Qwen2's repeat_kv; enable_gqa skips the copy.
    if key_mask is None and num_new == 1:
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    if key_mask is None and num_new == num_all:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    allowed = torch.ones(num_new, num_all, dtype=torch.bool, device=q.device).tril(num_all - num_new)
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, :]  # [B, T, S]
        # A padding query sees no real key; letting it see itself keeps its (unused) row finite.
        allowed[:, :, num_all - num_new :] |= torch.eye(num_new, dtype=torch.bool, device=q.device)
        allowed = allowed[:, None]  # [B, 1, T, S]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=True)


class Attention(nn.Module):
    def __init__(self, cfg: MiMoConfig) -> None:
        super().__init__()
        self.cfg = cfg
        q_dim, kv_dim = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, q_dim, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, kv_dim, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, kv_dim, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(q_dim, cfg.hidden_size, bias=False)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None, key_mask: Tensor | None = None
    ) -> Tensor:
        # x: [B, T, H]
        bsz, num_new, _ = x.shape
        d = self.cfg.head_dim
        q = self.q_proj(x).view(bsz, num_new, -1, d).transpose(1, 2)  # [B, Hq, T, D]
        k = self.k_proj(x).view(bsz, num_new, -1, d).transpose(1, 2)  # [B, Hkv, T, D]
        v = self.v_proj(x).view(bsz, num_new, -1, d).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.append(k, v)
        out = causal_attention(q, k, v, key_mask)  # [B, Hq, T, D]
        return self.o_proj(out.transpose(1, 2).reshape(bsz, num_new, -1))


class MLP(nn.Module):
    def __init__(self, cfg: MiMoConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """One pre-norm Qwen2 block: x += attn(norm(x)); x += mlp(norm(x))."""

    def __init__(self, cfg: MiMoConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None, key_mask: Tensor | None = None
    ) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, key_mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class MTPLayer(DecoderLayer):
    """MiMo's MTP layer: a decoder block fed input_proj(cat[hidden_layernorm(h_t), token_layernorm(e_{t+1})])."""

    def __init__(self, cfg: MiMoConfig) -> None:
        super().__init__(cfg)
        self.token_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.hidden_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.input_proj = nn.Linear(2 * cfg.hidden_size, cfg.hidden_size, bias=False)
        self.final_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward_mtp(
        self,
        hidden: Tensor,
        next_embeds: Tensor,
        cos: Tensor,
        sin: Tensor,
        cache: KVCache | None,
        key_mask: Tensor | None = None,
    ) -> Tensor:
        # hidden, next_embeds: [B, T, H]; the hidden state goes FIRST in the concatenation.
        z = self.input_proj(torch.cat([self.hidden_layernorm(hidden), self.token_layernorm(next_embeds)], dim=-1))
        return self.final_layernorm(super().forward(z, cos, sin, cache, key_mask))


class MiMoModel(nn.Module):
    def __init__(self, cfg: MiMoConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mtp_layers = nn.ModuleList(MTPLayer(cfg) for _ in range(cfg.num_nextn_predict_layers))


class MiMoForCausalLM(nn.Module):
    """State-dict names match HF MiMo. Positions are explicit so a serving engine controls them."""

    def __init__(self, cfg: MiMoConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = MiMoModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def new_kv_caches(self) -> list[KVCache]:
        """Empty caches for `forward`, one per decoder layer."""
        return [KVCache() for _ in range(self.config.num_hidden_layers)]

    def _rotary(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        if positions.dim() == 1:  # [T] -> [1, T], shared by the batch
            positions = positions[None]
        return rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta, dtype)

    def forward(
        self,
        input_ids: Tensor,
        positions: Tensor,
        kv_caches: list[KVCache] | None = None,
        key_mask: Tensor | None = None,
    ) -> Tensor:
        """input_ids: [B, T], positions: [B, T] or [T] -> final-normed hidden states [B, T, H].

        With kv_caches the T tokens follow the ones already cached (each cache grows by T).
        key_mask: [B, cached + T], False on padding tokens; None when nothing is padded.
        """
        x = self.model.embed_tokens(input_ids)  # [B, T, H]
        cos, sin = self._rotary(positions, x.dtype)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, None if kv_caches is None else kv_caches[i], key_mask)
        return self.model.norm(x)

    def compute_logits(self, hidden: Tensor) -> Tensor:
        """hidden: [..., H] (from `forward` or `mtp_forward`) -> logits [..., V]."""
        return self.lm_head(hidden)

    def mtp_forward(
        self,
        hidden: Tensor,
        next_token_ids: Tensor,
        positions: Tensor,
        kv_cache: KVCache | None = None,
        key_mask: Tensor | None = None,
        layer_idx: int = 0,
    ) -> Tensor:
        """Draft hidden states for token t+2 from main hidden h_t and token x_{t+1}.

        hidden: [B, T, H] from `forward` at positions t; next_token_ids: [B, T] are x_{t+1};
        positions: [B, T] or [T] are t; key_mask as in `forward`. Returns [B, T, H] for `compute_logits`.
        Like SGLang and vLLM, the token embedding is zeroed at position 0.
        """
        embeds = self.model.embed_tokens(next_token_ids)  # [B, T, H]
        pos = positions if positions.dim() == 2 else positions[None].expand(embeds.shape[:2])
        embeds = embeds.masked_fill((pos == 0)[..., None], 0.0)
        cos, sin = self._rotary(positions, hidden.dtype)
        layer: MTPLayer = self.model.mtp_layers[layer_idx]  # type: ignore[assignment]
        return layer.forward_mtp(hidden, embeds, cos, sin, kv_cache, key_mask)
