"""The one model-directory reader: what counts as "no token", and the worker and the tokenizer service agreeing.

Before services.text.modeldir, the worker read `"pad_token": ""` as a token and `"eos_token_id": -1` as an id,
while the tokenizer service read both as "none"; these tests pin the one rule both now follow.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from services.text.artifacts import load_tokenizer_dir
from services.text.modeldir import ModelDirError, read_model_dir, token_content, token_ids
from services.worker.model_info import read_model_info


@pytest.fixture
def copy_dir(fixture_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(fixture_dir, tmp_path / "model"))


def edit_json(path: Path, **fields: object) -> None:
    body = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**body, **fields}))


def test_ids_are_non_negative_ints_alone_or_in_a_list():
    assert token_ids(7) == (7,) and token_ids([3, -1, 5]) == (3, 5) and token_ids(0) == (0,)
    assert token_ids(-1) == () and token_ids(None) == () and token_ids(True) == () and token_ids("2") == ()


def test_empty_token_text_is_no_token():
    assert token_content("") is None and token_content({"content": ""}) is None and token_content(None) is None
    assert token_content("<|im_end|>") == "<|im_end|>" and token_content({"content": "<s>"}) == "<s>"


def test_negative_and_empty_entries_give_no_ids(copy_dir: Path):
    edit_json(copy_dir / "config.json", vocab_size=10, eos_token_id=-1, pad_token_id=-1, bos_token_id=-1)
    edit_json(copy_dir / "generation_config.json", eos_token_id=[-1], bos_token_id=-1)
    edit_json(copy_dir / "tokenizer_config.json", eos_token="", pad_token={"content": ""}, bos_token="")
    facts = read_model_dir(copy_dir)
    assert facts.eos_token_ids == () and facts.eos_token_id is None
    assert facts.pad_token_id is None and facts.bos_token_id is None
    # The ChatML ends still stop generation: the tokenizer has them as special tokens.
    specials = dict(facts.special_tokens)
    assert facts.stop_token_ids == tuple(sorted({specials["<|im_end|>"], specials["<|endoftext|>"]}))
    info = load_tokenizer_dir(copy_dir).info
    assert (info.eos_token_id, info.pad_token_id, info.bos_token_id) == (None, None, None)
    assert read_model_info(copy_dir).eos_token_ids == ()


def test_named_tokens_win_over_config_ids(copy_dir: Path):
    edit_json(copy_dir / "config.json", vocab_size=10, eos_token_id=9, pad_token_id=8)
    facts = read_model_dir(copy_dir)
    specials = dict(facts.special_tokens)
    assert facts.pad_token_id == specials["<|endoftext|>"]  # tokenizer_config's pad_token, not config.json's 8
    assert facts.eos_token_ids == (specials["<|im_end|>"], 9)  # generation_config first, then config.json
    assert facts.vocab_size >= 10


def test_a_malformed_file_is_named_not_read_as_empty(copy_dir: Path):
    (copy_dir / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelDirError, match=r"config.json in .*model is not a JSON object"):
        read_model_dir(copy_dir)
    (copy_dir / "config.json").write_text("{")
    with pytest.raises(ModelDirError, match=r"config.json in .*model is not valid JSON"):
        read_model_info(copy_dir)


def test_missing_directory_and_empty_directory_are_named(tmp_path: Path):
    with pytest.raises(ModelDirError, match="does not exist"):
        read_model_dir(tmp_path / "nowhere")
    with pytest.raises(ModelDirError, match=r"neither tokenizer\.json nor a config\.json with vocab_size"):
        read_model_dir(tmp_path)


def test_worker_and_tokenizer_service_agree_on_every_directory(model_dir: Path):
    """GetModelInfo (worker) and GetTokenizerInfo (tokenizer service) report the same ids for one directory."""
    worker = read_model_info(model_dir)
    tokenizer = load_tokenizer_dir(model_dir).info
    assert set(worker.eos_token_ids) <= set(tokenizer.stop_token_ids)
    assert tokenizer.eos_token_id in worker.eos_token_ids
    assert worker.pad_token_id == tokenizer.pad_token_id
    assert worker.vocab_size >= tokenizer.vocab_size
