"""Load a HF-format MiMo directory (config.json + one or more safetensors files) into MiMoForCausalLM."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from services.worker.model.mimo import MiMoConfig, MiMoForCausalLM


def read_safetensors_dir(model_dir: Path, device: str | torch.device) -> dict[str, Tensor]:
    """All tensors of `model.safetensors`, or of the shards named in `model.safetensors.index.json`."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors: dict[str, Tensor] = {}
    for name in files:
        tensors.update(load_file(model_dir / name, device=str(device)))
    return tensors


def load_mimo(
    model_dir: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16
) -> MiMoForCausalLM:
    """Build a MiMo from a HF directory (config.json + safetensors, single or sharded), in eval mode."""
    model_dir = Path(model_dir)
    cfg = MiMoConfig.from_json(model_dir / "config.json")
    tensors = read_safetensors_dir(model_dir, device)
    if cfg.num_nextn_predict_layers == 0:  # a plain Qwen2-style load: ignore any MTP weights
        tensors = {k: v for k, v in tensors.items() if ".mtp_layers." not in k}
    if cfg.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    with torch.device("meta"):  # no allocation until the real tensors are assigned
        model = MiMoForCausalLM(cfg)
    expected = set(model.state_dict()) - ({"lm_head.weight"} if cfg.tie_word_embeddings else set())
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if missing or unexpected:
        raise ValueError(f"{model_dir}: missing {sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}")
    model.load_state_dict({k: v.to(dtype) for k, v in tensors.items()}, strict=False, assign=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.eval()
