"""The MiMo model matches transformers' Qwen2, loads HF directories, and its MTP head and template behave."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from services.worker.model import KVCache, MiMoConfig, MiMoForCausalLM, load_mimo

TINY = Path(__file__).resolve().parents[2] / "models" / "tiny-mimo"
SMALL = MiMoConfig(
    vocab_size=97,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    rope_theta=640000.0,
    rms_norm_eps=1e-5,
    num_nextn_predict_layers=1,
)


def random_model(cfg: MiMoConfig = SMALL) -> MiMoForCausalLM:
    torch.manual_seed(0)
    model = MiMoForCausalLM(cfg)
    with torch.no_grad():
        for param in model.parameters():  # norms and biases too, so every weight matters
            param.normal_(0.0, 0.2)
    return model.eval()


def as_qwen2(model: MiMoForCausalLM):
    """The same backbone as transformers' Qwen2ForCausalLM (MTP weights dropped, as SGLang's main model does)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = model.config
    hf_cfg = Qwen2Config(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta,
        rms_norm_eps=cfg.rms_norm_eps,
        hidden_act=cfg.hidden_act,
        tie_word_embeddings=cfg.tie_word_embeddings,
        attn_implementation="eager",
    )
    hf = Qwen2ForCausalLM(hf_cfg).eval()
    backbone = {k: v for k, v in model.state_dict().items() if ".mtp_layers." not in k}
    hf.load_state_dict(backbone, strict=True)
    return hf


def assert_logits_match_qwen2(model: MiMoForCausalLM, input_ids: torch.Tensor) -> None:
    hf = as_qwen2(model)
    positions = torch.arange(input_ids.shape[1])
    with torch.no_grad():
        ours = model.compute_logits(model(input_ids, positions))
        theirs = hf(input_ids).logits
    assert (ours - theirs).abs().max().item() < 1e-4


def test_logits_match_transformers_qwen2_on_a_random_config() -> None:
    torch.manual_seed(1)
    assert_logits_match_qwen2(random_model(), torch.randint(0, SMALL.vocab_size, (2, 13)))


def test_logits_match_transformers_qwen2_on_the_shipped_checkpoint() -> None:
    model = load_mimo(TINY, "cpu", torch.float32)
    tokenizer = Tokenizer.from_file(str(TINY / "tokenizer.json"))
    text = "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nWhat is 47 + 38?<|im_end|>\n<|im_start|>assistant\n"
    assert_logits_match_qwen2(model, torch.tensor([tokenizer.encode(text).ids]))


def test_kv_cache_decoding_equals_the_full_forward() -> None:
    model = random_model()
    ids = torch.randint(0, SMALL.vocab_size, (2, 9))
    positions = torch.arange(9)
    with torch.no_grad():
        full = model(ids, positions)
        caches = model.new_kv_caches()
        parts = [model(ids[:, :5], positions[:5], caches)]  # a prefill, then one token at a time
        parts += [model(ids[:, t : t + 1], positions[t : t + 1], caches) for t in range(5, 9)]
        full_mtp = model.mtp_forward(full[:, :-1], ids[:, 1:], positions[:-1])
        mtp_cache = KVCache()
        step_mtp = [
            model.mtp_forward(full[:, t : t + 1], ids[:, t + 1 : t + 2], positions[t : t + 1], mtp_cache)
            for t in range(8)
        ]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(step_mtp, dim=1), full_mtp, atol=1e-5, rtol=1e-5)
    assert caches[0].num_tokens == 9 and mtp_cache.num_tokens == 8


def test_a_left_padded_batch_decodes_like_each_prompt_alone() -> None:
    model = random_model()
    short, long = torch.randint(0, SMALL.vocab_size, (4,)), torch.randint(0, SMALL.vocab_size, (7,))
    batch = torch.stack([torch.cat([torch.zeros(3, dtype=torch.long), short]), long])  # [2, 7], row 0 left-padded
    key_mask = torch.tensor([[False] * 3 + [True] * 4, [True] * 7])
    positions = torch.tensor([[0, 0, 0, 0, 1, 2, 3], list(range(7))])
    next_ids = torch.randint(0, SMALL.vocab_size, (2, 1))  # the token each row decodes next
    with torch.no_grad():
        caches, mtp_cache = model.new_kv_caches(), KVCache()
        hidden = model(batch, positions, caches, key_mask)  # prefill
        model.mtp_forward(hidden, torch.cat([batch[:, 1:], next_ids], dim=1), positions, mtp_cache, key_mask)
        step_mask, step_pos = torch.cat([key_mask, key_mask.new_ones(2, 1)], dim=1), torch.tensor([[4], [7]])
        step = model(next_ids, step_pos, caches, step_mask)  # one decode step: [2, 1, H]
        step_mtp = model.mtp_forward(step, next_ids, step_pos, mtp_cache, step_mask)
        for row, ids in enumerate((short, long)):
            n, seq = len(ids), torch.cat([ids, next_ids[row]])[None]  # [1, n + 1]
            alone = model(seq, torch.arange(n + 1))
            alone_mtp = model.mtp_forward(
                alone, torch.cat([seq[:, 1:], next_ids[row : row + 1]], dim=1), torch.arange(n + 1)
            )
            torch.testing.assert_close(hidden[row, -n:], alone[0, :n], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(step[row, 0], alone[0, n], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(step_mtp[row, 0], alone_mtp[0, n], atol=1e-5, rtol=1e-5)


def test_the_mtp_layer_concatenates_hidden_first_and_zeroes_position_zero() -> None:
    model = random_model()
    mtp = model.model.mtp_layers[0]
    hidden = torch.randn(1, 3, SMALL.hidden_size)
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        got = model.mtp_forward(hidden, ids, torch.arange(3))
        embeds = model.model.embed_tokens(ids)
        embeds[:, 0] = 0.0
        z = mtp.input_proj(torch.cat([mtp.hidden_layernorm(hidden), mtp.token_layernorm(embeds)], dim=-1))
        z = z + mtp.self_attn(mtp.input_layernorm(z), *model._rotary(torch.arange(3), z.dtype), None)
        z = z + mtp.mlp(mtp.post_attention_layernorm(z))
    torch.testing.assert_close(got, mtp.final_layernorm(z))


def test_the_shipped_checkpoint_has_hf_mimo_names_config_and_size() -> None:
    cfg = json.loads((TINY / "config.json").read_text())
    assert cfg["architectures"] == ["MiMoForCausalLM"] and cfg["model_type"] == "mimo"
    assert cfg["num_nextn_predict_layers"] == 1 and cfg["attention_bias"] and not cfg["tie_word_embeddings"]
    names = set(load_file(TINY / "model.safetensors"))
    assert {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"} <= names
    assert "model.layers.0.self_attn.q_proj.bias" in names and "model.layers.0.self_attn.o_proj.bias" not in names
    mtp = {n.removeprefix("model.mtp_layers.0.") for n in names if n.startswith("model.mtp_layers.0.")}
    assert len(mtp) == 16  # as in MiMo-7B's index
    assert {f"{n}.weight" for n in ("token_layernorm", "hidden_layernorm", "input_proj", "final_layernorm")} <= mtp
    assert sum(f.stat().st_size for f in TINY.rglob("*") if f.is_file()) <= 20_000_000


def test_a_sharded_directory_loads_through_the_same_loader(tmp_path: Path) -> None:
    tensors = load_file(TINY / "model.safetensors")
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, shard_names in shards.items():
        save_file({n: tensors[n] for n in shard_names}, tmp_path / shard, metadata={"format": "pt"})
    weight_map = {n: shard for shard, shard_names in shards.items() for n in shard_names}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    shutil.copy(TINY / "config.json", tmp_path / "config.json")
    sharded, single = load_mimo(tmp_path, "cpu", torch.bfloat16), load_mimo(TINY, "cpu", torch.bfloat16)
    for (name, a), (_, b) in zip(sharded.state_dict().items(), single.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert sharded.lm_head.weight.dtype == torch.bfloat16


def test_a_directory_missing_a_weight_is_refused(tmp_path: Path) -> None:
    tensors = load_file(TINY / "model.safetensors")
    del tensors["model.mtp_layers.0.input_proj.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    shutil.copy(TINY / "config.json", tmp_path / "config.json")
    with pytest.raises(ValueError, match="input_proj"):
        load_mimo(tmp_path)


def test_the_mtp_head_drafts_the_next_greedy_token_on_a_real_answer() -> None:
    model = load_mimo(TINY, "cpu", torch.float32)
    tokenizer = Tokenizer.from_file(str(TINY / "tokenizer.json"))
    prompt = "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nWhat is 47 + 38?<|im_end|>\n<|im_start|>assistant\n"
    answer = "<think>\n47 + 38\nones: 7 + 8 = 15, carry 1\ntens: 4 + 3 + 1 = 8\n47 + 38 = 85\n</think>\n"
    num_prompt = len(tokenizer.encode(prompt).ids)
    ids = torch.tensor([tokenizer.encode(prompt + answer).ids])
    positions = torch.arange(ids.shape[1])
    with torch.no_grad():
        hidden = model(ids, positions)  # [1, T, H]
        greedy = model.compute_logits(hidden).argmax(-1)[0]  # greedy[t] guesses token t+1
        drafts = model.compute_logits(model.mtp_forward(hidden[:, :-1], ids[:, 1:], positions[:-1])).argmax(-1)[0]
    # drafts[t] guesses token t+2 from h_t and x_{t+1}: compare with the main model's guess at t+1.
    agree = (drafts[num_prompt - 1 :] == greedy[num_prompt:]).float().mean().item()
    assert agree >= 0.85
    assert tokenizer.decode(greedy[num_prompt - 1 : -1].tolist()).count("85") >= 1


def test_the_chat_template_renders_mimo_chatml() -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TINY)
    question = [{"role": "user", "content": "What is 2 + 3?"}]
    empty_system = tokenizer.apply_chat_template(
        [{"role": "system", "content": ""}, *question], tokenize=False, add_generation_prompt=True
    )
    assert empty_system == (
        "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    )
    default_system = tokenizer.apply_chat_template(question, tokenize=False, add_generation_prompt=False)
    assert default_system == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
    )
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
    digits = tokenizer.tokenize("12345")
    assert digits == ["1", "2", "3", "4", "5"]
