"""Loading tokenizer directories: what is required, clear errors, chat template precedence, safe chunk saving."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from services.text.artifacts import (
    ArtifactsError,
    artifacts_sha256,
    load_tokenizer_dir,
    save_artifact_chunks,
)


@pytest.fixture
def copy_dir(fixture_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(fixture_dir, tmp_path / "model"))


def test_missing_directory_and_missing_tokenizer_json_are_named(tmp_path: Path):
    with pytest.raises(ArtifactsError, match=re.escape(f"{tmp_path / 'nope'} does not exist")):
        load_tokenizer_dir(tmp_path / "nope")
    with pytest.raises(ArtifactsError, match=re.escape(f"tokenizer.json is missing in {tmp_path}")):
        load_tokenizer_dir(tmp_path)


def test_missing_chat_template_is_named(copy_dir: Path):
    config = json.loads((copy_dir / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (copy_dir / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactsError, match=r"no chat template in .*model.*chat_template.jinja"):
        load_tokenizer_dir(copy_dir)


def test_malformed_files_are_named(copy_dir: Path):
    (copy_dir / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ArtifactsError, match=r"tokenizer_config.json in .* is not valid JSON"):
        load_tokenizer_dir(copy_dir)
    (copy_dir / "tokenizer.json").write_text("{}")
    with pytest.raises(ArtifactsError, match=r"tokenizer.json in .* could not be loaded"):
        load_tokenizer_dir(copy_dir)


def test_chat_template_file_wins_and_changes_the_hash(copy_dir: Path):
    before = load_tokenizer_dir(copy_dir)
    (copy_dir / "chat_template.jinja").write_text("{% for m in messages %}[{{ m.content }}]{% endfor %}")
    after = load_tokenizer_dir(copy_dir)
    assert after.chat_template.startswith("{% for m in messages %}")
    assert "chat_template.jinja" in after.info.artifact_files
    assert after.info.artifacts_sha256 != before.info.artifacts_sha256


def test_info_from_config_and_generation_config(fixture_dir: Path):
    info = load_tokenizer_dir(fixture_dir).info
    specials = dict(info.special_tokens)
    assert info.stop_token_ids == tuple(sorted({specials["<|im_end|>"], specials["<|endoftext|>"]}))
    assert info.model_max_length == 131072 and info.bos_token_id is None
    files = {name: (fixture_dir / name).read_bytes() for name in info.artifact_files}
    assert info.artifacts_sha256 == artifacts_sha256(files)


class Chunk:
    def __init__(self, file_name: str, offset: int, data: bytes, is_last_chunk: bool, file_sha256: str = "") -> None:
        self.file_name, self.offset, self.data = file_name, offset, data
        self.is_last_chunk, self.file_sha256, self.artifacts_sha256 = is_last_chunk, file_sha256, ""


def test_saving_chunks_refuses_bad_names_gaps_and_hashes(tmp_path: Path):
    with pytest.raises(ArtifactsError, match="unexpected artifact file name"):
        save_artifact_chunks([Chunk("../evil.json", 0, b"x", True)], tmp_path)
    with pytest.raises(ArtifactsError, match="offset 5, expected 0"):
        save_artifact_chunks([Chunk("tokenizer.json", 5, b"x", True)], tmp_path)
    with pytest.raises(ArtifactsError, match="sha256 mismatch"):
        save_artifact_chunks([Chunk("tokenizer.json", 0, b"x", True, "0" * 64)], tmp_path)
    with pytest.raises(ArtifactsError, match=r"ended before the last chunk of tokenizer.json"):
        save_artifact_chunks([Chunk("tokenizer.json", 0, b"x", False)], tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written on failure


def test_router_side_modules_import_without_grpc():
    """The router loads fetched artifacts and detokenizes locally; these modules must not pull in grpc."""
    code = "import sys, services.text.artifacts, services.text.incremental; print('grpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
