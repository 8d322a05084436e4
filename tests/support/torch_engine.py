"""Small random MiMo models and model directories for the torch engine's tests (CPU, fp32)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

from services.worker.engine_api import GenerateInput, OutputChunk, SamplingConfig
from services.worker.engines.sim.synthetic_model import write_synthetic_model
from services.worker.engines.torch import TorchEngine, TorchEngineConfig
from services.worker.engines.torch.core import CoreConfig, EngineCore
from services.worker.model.mimo import MiMoConfig, MiMoForCausalLM
from tests.support.tokenizer_dirs import TINY_MIMO

SMALL = MiMoConfig(
    vocab_size=97,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=512,
    rope_theta=640000.0,
    rms_norm_eps=1e-5,
    num_nextn_predict_layers=1,
)


def random_model(cfg: MiMoConfig = SMALL, seed: int = 0, scale: float = 0.2) -> MiMoForCausalLM:
    """Every weight random (norms and biases too), so a wrong index anywhere changes the output."""
    torch.manual_seed(seed)
    model = MiMoForCausalLM(cfg)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, scale)
    return model.eval()


def small_config(vocab_size: int, max_positions: int = 4096) -> MiMoConfig:
    return MiMoConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=max_positions, rope_theta=10000.0,
        rms_norm_eps=1e-6, num_nextn_predict_layers=1,
    )  # fmt: skip


def write_model_dir(path: Path, seed: int = 0) -> Path:
    """A complete HF-style directory: ChatML tokenizer, config.json, generation_config.json, random weights."""
    root = write_synthetic_model(path, vocab_size=512, max_context_length=4096)
    meta = json.loads((root / "config.json").read_text())
    cfg = small_config(meta["vocab_size"])
    body = {**cfg.to_hf_dict(), "eos_token_id": meta["eos_token_id"]}
    (root / "config.json").write_text(json.dumps(body, indent=1))
    state = {k: v.contiguous() for k, v in random_model(cfg, seed, scale=0.1).state_dict().items()}
    save_file(state, str(root / "model.safetensors"))
    return root


async def make_torch_engine(model_dir: Path) -> TorchEngine:
    """The conformance suite's factory: the directory's weights, or random ones of its vocabulary."""
    cfg = TorchEngineConfig(model_dir=str(model_dir), max_running_requests=16, kv_cache_tokens=16384)
    if (model_dir / "model.safetensors").is_file():
        return TorchEngine(cfg)
    meta = json.loads((model_dir / "config.json").read_text())
    model = random_model(small_config(meta["vocab_size"], meta.get("max_position_embeddings", 4096)), scale=0.1)
    return TorchEngine(cfg, model=model)


def make_core(
    model: MiMoForCausalLM, *, is_mtp: bool = True, num_blocks: int = 512, block_size: int = 4, **kw
) -> EngineCore:
    cfg = CoreConfig(num_blocks=num_blocks, block_size=block_size, is_mtp_enabled=is_mtp,
                     max_context_length=model.config.max_position_embeddings, **kw)  # fmt: skip
    return EngineCore(model, cfg)


def tiny_chat_prompts() -> list[tuple[int, ...]]:
    """Three chat-ish prompts in tiny MiMo's tokens (it accepts about half its drafts on them)."""
    tokenizer = Tokenizer.from_file(str(TINY_MIMO / "tokenizer.json"))
    texts = ["What is 12 + 7?", "Write a function that adds two numbers.", "Tell me about the sea."]
    return [tuple(tokenizer.encode(t).ids) for t in texts]


def greedy(max_new: int, **kw) -> SamplingConfig:
    return SamplingConfig(temperature=0.0, max_new_tokens=max_new, **kw)


def random_prompts(num: int, vocab: int, seed: int, min_len: int = 1, max_len: int = 24) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (num,), generator=gen).tolist()
    return [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in lengths]


def run_all(
    core: EngineCore, requests: list[GenerateInput], max_steps: int = 10_000
) -> dict[tuple[str, int], list[OutputChunk]]:
    """Add the requests, step until idle; the chunks of each (request id, sample index)."""
    out: dict[tuple[str, int], list[OutputChunk]] = {}
    for req in requests:
        for rid, chunk in core.add_request(req):
            out.setdefault((rid, chunk.index), []).append(chunk)
    for _ in range(max_steps):
        if not core.has_work:
            return out
        for rid, chunk in core.step():
            out.setdefault((rid, chunk.index), []).append(chunk)
    raise AssertionError("the engine did not finish")


def tokens_of(chunks: list[OutputChunk]) -> list[int]:
    return [t for c in chunks for t in c.token_ids]
