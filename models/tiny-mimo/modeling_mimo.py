"""MiMo for HF transformers (`trust_remote_code`): Qwen2's decoder plus MiMo's multi-token-prediction layers.

Written here from MiMo's published architecture (reference/mimo.md §1); `auto_map` in config.json points
`AutoModelForCausalLM` at `MiMoForCausalLM`. The causal-LM `forward` and `generate` are Qwen2's: like MiMo's own
file, they never call the MTP layers. `mtp_logits` runs them the way they were trained: the MTP layer predicts
token t+2 from the main model's final-normed hidden state at t and the embedding of token t+1.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer, Qwen2ForCausalLM, Qwen2Model, Qwen2RMSNorm

from .configuration_mimo import MiMoConfig


class MiMoMTPLayer(Qwen2DecoderLayer):
    """A Qwen2 block fed input_proj(cat[hidden_layernorm(h_t), token_layernorm(e_{t+1})]), then final_layernorm.

    The hidden state goes first in the concatenation (DeepSeek's MTP puts the embedding first).
    """

    def __init__(self, config: MiMoConfig, layer_idx: int) -> None:
        super().__init__(config, layer_idx)
        self.token_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.hidden_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.input_proj = nn.Linear(2 * config.hidden_size, config.hidden_size, bias=False)
        self.final_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward_mtp(
        self,
        hidden_states: torch.Tensor,
        next_embeds: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """hidden_states, next_embeds: [B, T, H]; attention_mask: additive [B, 1, T, T] -> [B, T, H]."""
        fused = torch.cat([self.hidden_layernorm(hidden_states), self.token_layernorm(next_embeds)], dim=-1)
        out = super().forward(
            self.input_proj(fused), attention_mask=attention_mask, position_embeddings=position_embeddings
        )
        if isinstance(out, tuple):  # older transformers return (hidden_states, ...)
            out = out[0]
        return self.final_layernorm(out)


class MiMoModel(Qwen2Model):
    """Qwen2's model with `num_nextn_predict_layers` MTP layers beside it (weights `model.mtp_layers.N.*`)."""

    config_class = MiMoConfig

    def __init__(self, config: MiMoConfig) -> None:
        super().__init__(config)
        # layer_idx 0: the MTP layers never touch a KV cache; the index only picks layer_types[0] (full attention).
        self.mtp_layers = nn.ModuleList(MiMoMTPLayer(config, 0) for _ in range(config.num_nextn_predict_layers))
        self.post_init()


class MiMoForCausalLM(Qwen2ForCausalLM):
    config_class = MiMoConfig

    def __init__(self, config: MiMoConfig) -> None:
        super().__init__(config)
        self.model = MiMoModel(config)
        self.post_init()

    @torch.no_grad()
    def mtp_logits(self, input_ids: torch.Tensor, layer_idx: int = 0) -> torch.Tensor:
        """Draft logits for x_{t+2} at every t of input_ids [B, T] (no padding): [B, T - 1, V].

        Position t pairs the final-normed hidden h_t with embed(x_{t+1}); the embedding is zeroed at position 0,
        as SGLang and vLLM do ("not needed by MTP").
        """
        out = self.model(input_ids=input_ids, output_hidden_states=True, use_cache=False)
        hidden = out.hidden_states[-1][:, :-1]  # final-normed h_t, t = 0 .. T-2
        embeds = self.model.embed_tokens(input_ids[:, 1:]).clone()  # x_{t+1}
        embeds[:, 0] = 0.0  # position 0
        positions = torch.arange(hidden.shape[1], device=input_ids.device)[None].expand(hidden.shape[:2])
        rotary = self.model.rotary_emb(hidden, positions)
        num = hidden.shape[1]
        blocked = torch.ones(num, num, dtype=torch.bool, device=input_ids.device).triu(1)
        mask = torch.zeros(num, num, dtype=hidden.dtype, device=input_ids.device)
        mask = mask.masked_fill(blocked, torch.finfo(hidden.dtype).min)[None, None].expand(hidden.shape[0], 1, -1, -1)
        layer: MiMoMTPLayer = self.model.mtp_layers[layer_idx]  # type: ignore[assignment]
        return self.lm_head(layer.forward_mtp(hidden, embeds, rotary, mask))


__all__ = ["MiMoForCausalLM", "MiMoModel"]
