"""The one reader of a Hugging Face model directory: config, tokenizer files, generation config, stop ids.

Every service that needs a fact from these files asks `describe` (or `read_model_dir`), so the worker's
GetModelInfo and the tokenizer service's GetTokenizerInfo cannot disagree. The rules, in one place:
- a special token is a non-empty string, or an AddedToken object with non-empty `content`; `""` means none;
- an id is a non-negative int (`-1`, `true`, `null` and strings mean none), alone or in a list;
- a file that is present but is not a JSON object is an error naming the file, never read as empty.

Importable without grpc; also builds the GetTokenizer zip bundle the worker streams (SMG's file list).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
GENERATION_FILE = "generation_config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
MODEL_FILES = (CONFIG_FILE, GENERATION_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_FILE)
# ChatML's turn and document ends: always stop tokens when the tokenizer has them as special tokens.
CHATML_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
MAX_UINT32 = 2**32 - 1

BUNDLE_CHUNK_BYTES = 64 * 1024  # as SMG's servicers stream it
# The files SMG's own servicers put in the GetTokenizer bundle (smg_grpc_servicer/tokenizer_bundle.py), plus globs.
BUNDLE_FILES = (
    TOKENIZER_FILE,
    TOKENIZER_CONFIG_FILE,
    CONFIG_FILE,
    GENERATION_FILE,
    SPECIAL_TOKENS_FILE,
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "tiktoken.model",
    "chat_template.json",
)
BUNDLE_GLOBS = ("*.tiktoken", "*.jinja")


class ModelDirError(ValueError):
    """The directory is missing, or one of its files is malformed; the message names the file and the directory."""


@dataclass(frozen=True, slots=True)
class ModelDir:
    """The facts every service reads from a model directory. Ids are None when the files do not give one."""

    path: Path  # absolute
    architectures: tuple[str, ...]
    model_type: str
    vocab_size: int  # max of config.json's vocab_size and the tokenizer's highest id + 1; 0 when neither says
    max_position_embeddings: int  # config.json; 0 when absent
    model_max_length: int  # tokenizer_config.json, capped at 2**32-1; 0 when absent
    eos_token_id: int | None  # the tokenizer's eos_token
    eos_token_ids: tuple[int, ...]  # generation_config, then config.json, then the tokenizer's eos_token
    stop_token_ids: tuple[int, ...]  # eos_token_ids plus the ChatML ends the tokenizer has, sorted
    pad_token_id: int | None
    bos_token_id: int | None
    special_tokens: tuple[tuple[str, int], ...]  # the tokenizer's special added tokens (content, id), by id
    token_names: Mapping[str, str]  # e.g. {"eos_token": "<|im_end|>"}: named special tokens, for chat templates

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def special_token_ids(self) -> frozenset[int]:
        return frozenset(i for _, i in self.special_tokens)


TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def token_ids(value: Any) -> tuple[int, ...]:
    """The ids a config field gives: a non-negative int or a list of them; anything else (-1, bool, None) is none."""
    values = value if isinstance(value, list) else [value]
    return tuple(v for v in values if isinstance(v, int) and not isinstance(v, bool) and v >= 0)


def token_content(value: Any) -> str | None:
    """A special token as a config writes it: a string or an AddedToken dict with 'content'; '' is none."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def json_object(files: Mapping[str, bytes], name: str, directory: Path) -> dict[str, Any]:
    """File `name` as a JSON object; {} when absent; ModelDirError when present but not a JSON object."""
    if name not in files:
        return {}
    try:
        body = json.loads(files[name])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelDirError(f"{name} in {directory} is not valid JSON: {e}") from e
    if not isinstance(body, dict):
        raise ModelDirError(f"{name} in {directory} is not a JSON object")
    return body


def read_files(directory: Path, names: tuple[str, ...] = MODEL_FILES) -> dict[str, bytes]:
    """The named files present in `directory`, as exact bytes; ModelDirError when the directory is missing."""
    if not directory.is_dir():
        raise ModelDirError(f"model directory {directory} does not exist (expected {TOKENIZER_FILE} in it)")
    return {name: (directory / name).read_bytes() for name in names if (directory / name).is_file()}


def _vocabulary(tokenizer: Mapping[str, Any]) -> tuple[dict[str, int], list[tuple[str, int, bool]]]:
    """(token -> id over the model vocabulary and added tokens, [(content, id, special)] of the added tokens)."""
    model = tokenizer.get("model")
    vocab = model.get("vocab") if isinstance(model, dict) else None
    ids = {t: i for t, i in vocab.items() if isinstance(i, int)} if isinstance(vocab, dict) else {}
    added = [
        (t["content"], t["id"], bool(t.get("special")))
        for t in tokenizer.get("added_tokens", [])
        if isinstance(t, dict) and isinstance(t.get("content"), str) and token_ids(t.get("id"))
    ]
    ids.update((content, i) for content, i, _ in added)
    return ids, added


def _positive(value: Any, cap: int = MAX_UINT32) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return 0
    return int(min(value, cap))


def _first(*values: Any) -> int | None:
    for value in values:
        if ids := token_ids(value):
            return ids[0]
    return None


def describe(files: Mapping[str, bytes], directory: Path) -> ModelDir:
    """The facts in `files` (name -> exact bytes, as `read_files` returns them); `directory` names errors."""
    config = json_object(files, CONFIG_FILE, directory)
    generation = json_object(files, GENERATION_FILE, directory)
    tok_config = json_object(files, TOKENIZER_CONFIG_FILE, directory)
    special_map = json_object(files, SPECIAL_TOKENS_FILE, directory)
    ids, added = _vocabulary(json_object(files, TOKENIZER_FILE, directory))
    names = {}
    for name in TOKEN_NAMES:
        content = token_content(tok_config.get(name, special_map.get(name)))
        if content is not None:
            names[name] = content

    def named_id(name: str) -> int | None:
        return ids.get(names[name]) if name in names else None

    eos_id = named_id("eos_token")
    eos = [*token_ids(generation.get("eos_token_id")), *token_ids(config.get("eos_token_id"))]
    eos += [eos_id] if eos_id is not None else []
    specials = sorted(((content, i) for content, i, special in added if special), key=lambda t: t[1])
    chatml = {i for content, i in specials if content in CHATML_STOP_TOKENS}
    return ModelDir(
        path=directory.resolve(),
        architectures=tuple(a for a in config.get("architectures") or () if isinstance(a, str)),
        model_type=str(config.get("model_type") or ""),
        vocab_size=max(_positive(config.get("vocab_size")), max(ids.values(), default=-1) + 1),
        max_position_embeddings=_positive(config.get("max_position_embeddings")),
        model_max_length=_positive(tok_config.get("model_max_length")),
        eos_token_id=eos_id,
        eos_token_ids=tuple(dict.fromkeys(eos)),
        stop_token_ids=tuple(sorted({*eos, *chatml})),
        pad_token_id=_first(named_id("pad_token"), config.get("pad_token_id")),
        bos_token_id=_first(named_id("bos_token"), config.get("bos_token_id")),
        special_tokens=tuple(specials),
        token_names=names,
    )


def read_model_dir(directory: str | Path) -> ModelDir:
    """`describe` over the model files in `directory`; ModelDirError when it has no tokenizer.json nor vocab_size."""
    root = Path(directory).resolve()
    info = describe(read_files(root), root)
    if info.vocab_size == 0:
        raise ModelDirError(f"{root} has neither {TOKENIZER_FILE} nor a {CONFIG_FILE} with vocab_size")
    return info


def tokenizer_bundle(model_dir: str | Path) -> bytes:
    """A zip of the directory's tokenizer files, as SMG's GetTokenizer expects; FileNotFoundError if none."""
    root = Path(model_dir)
    buf = io.BytesIO()
    added: set[str] = set()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in BUNDLE_FILES:
            if (root / name).is_file():
                zf.write(root / name, name)
                added.add(name)
        for pattern in BUNDLE_GLOBS:
            for match in sorted(root.glob(pattern)):
                if match.is_file() and match.name not in added:
                    zf.write(match, match.name)
                    added.add(match.name)
    if not added:
        raise FileNotFoundError(f"no tokenizer files in {root}")
    return buf.getvalue()


def bundle_chunks(data: bytes, chunk_bytes: int = BUNDLE_CHUNK_BYTES) -> Iterator[tuple[bytes, str]]:
    """(data, sha256) pieces; the SHA-256 of the whole archive rides on the last piece only."""
    digest = hashlib.sha256(data).hexdigest()
    for start in range(0, len(data), chunk_bytes):
        end = min(start + chunk_bytes, len(data))
        yield data[start:end], digest if end == len(data) else ""
