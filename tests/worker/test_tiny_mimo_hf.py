"""The tiny MiMo checkpoint in MiMo's own loadable layout: HF transformers loads it with `trust_remote_code`
(configuration_mimo.py, modeling_mimo.py, `auto_map`) and computes the same logits, MTP logits and greedy tokens
as our model (services/worker/model) and engine."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from services.worker.engine_api import GenerateInput, SamplingConfig
from services.worker.engines.torch.core import CoreConfig, EngineCore
from services.worker.model import MiMoConfig, load_mimo

TINY = Path(__file__).resolve().parents[2] / "models" / "tiny-mimo"


def artifacts_module():
    spec = importlib.util.spec_from_file_location("tiny_mimo_artifacts", TINY / "artifacts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prompts() -> torch.Tensor:
    """Two ChatML arithmetic prompts of equal length plus two random ones (flatter, out-of-domain logits)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TINY / "tokenizer.json"))
    chat = [
        tok.encode(
            f"<|im_start|>system\n<|im_end|>\n<|im_start|>user\nWhat is {q}?<|im_end|>\n<|im_start|>assistant\n",
            add_special_tokens=False,
        ).ids
        for q in ("47 + 38", "91 - 26")
    ]
    length = len(chat[0])
    assert len(chat[1]) == length
    rand = torch.randint(3, 576, (2, length), generator=torch.Generator().manual_seed(7)).tolist()
    return torch.tensor(chat + rand)


@pytest.fixture(scope="module")
def hf_model():
    model, info = AutoModelForCausalLM.from_pretrained(
        TINY, trust_remote_code=True, dtype=torch.float32, output_loading_info=True
    )
    assert not any(info.values()), f"loading info not clean: {info}"
    return model.eval()


@pytest.fixture(scope="module")
def ours():
    return load_mimo(TINY, "cpu", torch.float32)


def test_auto_config_is_mimo_with_its_mtp_layer() -> None:
    cfg = AutoConfig.from_pretrained(TINY, trust_remote_code=True)
    assert type(cfg).__name__ == "MiMoConfig" and cfg.model_type == "mimo"
    assert cfg.num_nextn_predict_layers == 1 and cfg.head_dim == 32 and cfg.num_key_value_heads == 2


def test_hf_logits_match_ours(hf_model, ours) -> None:
    ids = prompts()
    positions = torch.arange(ids.shape[1])
    with torch.no_grad():
        theirs = hf_model(ids).logits
        hidden = ours(ids, positions)
        mine = ours.compute_logits(hidden)
        mtp_theirs = hf_model.mtp_logits(ids)
        mtp_mine = ours.compute_logits(ours.mtp_forward(hidden[:, :-1], ids[:, 1:], positions[:-1]))
    torch.testing.assert_close(theirs, mine, rtol=0, atol=1e-4)
    torch.testing.assert_close(mtp_theirs, mtp_mine, rtol=0, atol=1e-4)
    assert (theirs.argmax(-1) == mine.argmax(-1)).all()


def test_hf_generate_matches_our_engine_greedy(hf_model, ours) -> None:
    ids = prompts()
    with torch.no_grad():
        gen = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False,
                                pad_token_id=0, eos_token_id=None)  # fmt: skip
    hf_tokens = gen[:, ids.shape[1] :].tolist()
    core = EngineCore(ours, CoreConfig(num_blocks=64, is_mtp_enabled=True, use_cuda_graphs=False,
                                       compile_kernels=False, max_context_length=2048))  # fmt: skip
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=24, ignore_eos=True)
    for i, p in enumerate(ids.tolist()):
        core.add_request(GenerateInput(f"p{i}", tuple(p), sampling))
    out: dict[str, list[int]] = {}
    while core.has_work:
        for rid, chunk in core.step():
            out.setdefault(rid, []).extend(chunk.token_ids)
    assert [out[f"p{i}"] for i in range(len(hf_tokens))] == hf_tokens


def test_shipped_config_is_what_train_py_writes() -> None:
    artifacts = artifacts_module()
    shipped = json.loads((TINY / "config.json").read_text())
    assert artifacts.with_auto_map(MiMoConfig.from_dict(shipped).to_hf_dict()) == shipped


def test_a_training_output_dir_loads_with_remote_code(tmp_path: Path, ours) -> None:
    """What train.py writes into --out (config with auto_map + the two code files) loads on its own."""
    artifacts = artifacts_module()
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copyfile(TINY / name, tmp_path / name)
    artifacts.write_json(tmp_path / "config.json", artifacts.with_auto_map(ours.config.to_hf_dict()))
    artifacts.copy_remote_code(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True, dtype=torch.float32)
    ids = prompts()[:1]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ours.compute_logits(ours(ids, torch.arange(ids.shape[1]))))
