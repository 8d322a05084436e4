"""Tokenizer artifacts: load tokenizer.json + config + chat template from a directory, hash them, save fetched chunks.

Importable without grpc: the router uses `load_tokenizer_dir` on the files it fetched through GetTokenizerArtifacts
(`save_artifact_chunks`), so it tokenizes and detokenizes with exactly the bytes the tokenizer service serves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tokenizers import Tokenizer

from services.text.modeldir import (
    GENERATION_FILE,
    SPECIAL_TOKENS_FILE,
    TOKENIZER_FILE,
    ModelDir,
    ModelDirError,
    describe,
    json_object,
    read_files,
)
from services.text.modeldir import TOKENIZER_CONFIG_FILE as CONFIG_FILE

TEMPLATE_FILE = "chat_template.jinja"
# Every file served as an artifact when present; tokenizer.json and a chat template are required.
# The stop ids, special tokens and named tokens come from services.text.modeldir, the one reader of these files.
ARTIFACT_FILES = (TOKENIZER_FILE, CONFIG_FILE, TEMPLATE_FILE, SPECIAL_TOKENS_FILE, GENERATION_FILE)


# A missing directory or a malformed file: the message names both (the model-directory reader raises it too).
ArtifactsError = ModelDirError


@dataclass(frozen=True, slots=True)
class TokenizerInfo:
    """What clients need besides the vocabulary itself: sizes, special and stop tokens, the artifact hash."""

    model: str
    vocab_size: int
    special_tokens: tuple[tuple[str, int], ...]  # (content, id), by id
    stop_token_ids: tuple[int, ...]
    eos_token_id: int | None
    pad_token_id: int | None
    bos_token_id: int | None
    model_max_length: int  # 0 when the config does not say
    artifacts_sha256: str
    artifact_files: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LoadedTokenizer:
    """A fast tokenizer, its chat template and the exact file bytes it was built from."""

    tokenizer: Tokenizer
    info: TokenizerInfo
    chat_template: str
    template_tokens: Mapping[str, str]  # e.g. {"eos_token": "<|im_end|>"}, passed to the chat template
    files: Mapping[str, bytes]  # file name -> exact bytes, in ARTIFACT_FILES order


class ChunkLike(Protocol):
    """An ArtifactChunk message (or anything with its fields)."""

    file_name: str
    offset: int
    data: bytes
    is_last_chunk: bool
    file_sha256: str
    artifacts_sha256: str


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def artifacts_sha256(files: Mapping[str, bytes]) -> str:
    """sha256 over `"{name}:{sha256(bytes)}\\n"` for every file, by name: changes whenever any file changes."""
    lines = "".join(f"{name}:{file_sha256(files[name])}\n" for name in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def read_artifact_files(directory: Path) -> dict[str, bytes]:
    """The artifact files present in `directory`; ArtifactsError when the directory or tokenizer.json is missing."""
    files = read_files(directory, ARTIFACT_FILES)
    if TOKENIZER_FILE not in files:
        raise ArtifactsError(f"{TOKENIZER_FILE} is missing in {directory}")
    return files


def _chat_template(files: Mapping[str, bytes], config: Mapping[str, Any], directory: Path) -> str:
    """chat_template.jinja wins over the config's `chat_template`, as in transformers; a named list picks 'default'."""
    if TEMPLATE_FILE in files:
        return files[TEMPLATE_FILE].decode("utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if not isinstance(template, str) or not template:
        raise ArtifactsError(
            f"no chat template in {directory}: expected a 'chat_template' string in {CONFIG_FILE} or a {TEMPLATE_FILE}"
        )
    return template


def _build_info(tokenizer: Tokenizer, directory: Path, files: Mapping[str, bytes], facts: ModelDir) -> TokenizerInfo:
    return TokenizerInfo(
        model=facts.name,
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        special_tokens=facts.special_tokens,
        stop_token_ids=facts.stop_token_ids,
        eos_token_id=facts.eos_token_id,
        pad_token_id=facts.pad_token_id,
        bos_token_id=facts.bos_token_id,
        model_max_length=facts.model_max_length,
        artifacts_sha256=artifacts_sha256(files),
        artifact_files=tuple(files),
    )


def load_from_files(files: Mapping[str, bytes], directory: Path) -> LoadedTokenizer:
    """Build the tokenizer from exact file bytes (so what is served is what was loaded); `directory` names errors."""
    try:
        tokenizer = Tokenizer.from_str(files[TOKENIZER_FILE].decode("utf-8"))
    except Exception as e:  # tokenizers raises a plain Exception on malformed JSON
        raise ArtifactsError(f"{TOKENIZER_FILE} in {directory} could not be loaded: {e}") from e
    facts = describe(files, directory)
    template = _chat_template(files, json_object(files, CONFIG_FILE, directory), directory)
    info = _build_info(tokenizer, directory, files, facts)
    return LoadedTokenizer(tokenizer, info, template, dict(facts.token_names), dict(files))


def load_tokenizer_dir(directory: str | Path) -> LoadedTokenizer:
    """Load a HF model directory's tokenizer (tokenizer.json + tokenizer_config.json / chat_template.jinja)."""
    path = Path(directory)
    return load_from_files(read_artifact_files(path), path)


def save_artifact_chunks(chunks: Iterable[ChunkLike], directory: str | Path) -> str:
    """Write streamed ArtifactChunks into `directory`, checking every file's and the set's sha256; returns the set's.

    Raises ArtifactsError on an unsafe file name, a gap in a file's offsets, or a hash that does not match.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytearray] = {}
    complete: set[str] = set()
    expected_set = ""
    for chunk in chunks:
        name = chunk.file_name
        if name not in ARTIFACT_FILES:
            raise ArtifactsError(f"unexpected artifact file name {name!r}")
        buf = files.setdefault(name, bytearray())
        if chunk.offset != len(buf):
            raise ArtifactsError(f"{name}: chunk at offset {chunk.offset}, expected {len(buf)}")
        buf.extend(chunk.data)
        expected_set = chunk.artifacts_sha256 or expected_set
        if chunk.is_last_chunk:
            if file_sha256(bytes(buf)) != chunk.file_sha256:
                raise ArtifactsError(f"{name}: sha256 mismatch after {len(buf)} bytes")
            complete.add(name)
    if incomplete := sorted(set(files) - complete):
        raise ArtifactsError(f"the artifact stream ended before the last chunk of {', '.join(incomplete)}")
    received = {name: bytes(buf) for name, buf in files.items()}
    if TOKENIZER_FILE not in received:
        raise ArtifactsError(f"the artifact stream had no {TOKENIZER_FILE}")
    digest = artifacts_sha256(received)
    if expected_set and digest != expected_set:
        raise ArtifactsError(f"artifact set sha256 {digest} does not match the server's {expected_set}")
    for name, data in received.items():
        (out / name).write_bytes(data)
    return digest
