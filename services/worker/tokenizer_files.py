"""A model directory's facts (GetModelInfo) and its tokenizer files as SMG's GetTokenizer zip bundle."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from services.worker.engine_api import EngineModelInfo

BUNDLE_CHUNK_BYTES = 64 * 1024  # as SMG's servicers stream it
DEFAULT_CONTEXT_LENGTH = 32768

# The files SMG's own servicers put in the bundle (smg_grpc_servicer/tokenizer_bundle.py), plus globs.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "tiktoken.model",
    "chat_template.json",
)
TOKENIZER_GLOBS = ("*.tiktoken", "*.jinja")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _ids(value: Any) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int)]
    return []


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _tokenizer_vocab(model_dir: Path) -> tuple[dict[str, int], int]:
    """(token -> id for added tokens, vocabulary size incl. added tokens) from tokenizer.json."""
    data = _read_json(model_dir / "tokenizer.json")
    vocab = data.get("model", {}).get("vocab", {}) if isinstance(data.get("model"), dict) else {}
    added = {t["content"]: t["id"] for t in data.get("added_tokens", []) if isinstance(t, dict) and "id" in t}
    ids = [*vocab.values(), *added.values()] if isinstance(vocab, dict) else list(added.values())
    return added, (max(ids) + 1 if ids else 0)


def read_model_info(model_dir: str | Path, served_model_name: str | None = None) -> EngineModelInfo:
    """GetModelInfo facts from config.json, generation_config.json and the tokenizer files (absolute paths)."""
    root = Path(model_dir).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"model directory {root} does not exist")
    config = _read_json(root / "config.json")
    gen = _read_json(root / "generation_config.json")
    tok_config = _read_json(root / "tokenizer_config.json")
    added, tok_vocab = _tokenizer_vocab(root)
    if tok_vocab == 0 and not config.get("vocab_size"):
        raise FileNotFoundError(f"{root} has neither tokenizer.json nor a config.json with vocab_size")
    eos = [*_ids(gen.get("eos_token_id")), *_ids(config.get("eos_token_id"))]
    eos_text = _token_text(tok_config.get("eos_token"))
    if eos_text in added:
        eos.append(added[eos_text])
    bos_text = _token_text(tok_config.get("bos_token"))
    pad_text = _token_text(tok_config.get("pad_token"))
    max_len = config.get("max_position_embeddings") or tok_config.get("model_max_length")
    if not isinstance(max_len, int) or not 0 < max_len < 10_000_000:
        max_len = DEFAULT_CONTEXT_LENGTH
    return EngineModelInfo(
        model_path=str(root),
        tokenizer_path=str(root),
        served_model_name=served_model_name or root.name,
        max_context_length=max_len,
        vocab_size=max(int(config.get("vocab_size") or 0), tok_vocab),
        eos_token_ids=tuple(dict.fromkeys(eos)),
        pad_token_id=added.get(pad_text or "", _first(config.get("pad_token_id"), 0)),
        bos_token_id=added.get(bos_text or "", _first(config.get("bos_token_id"), 0)),
        architectures=tuple(config.get("architectures") or ()),
        model_type=str(config.get("model_type") or ""),
    )


def _first(value: Any, default: int) -> int:
    ids = _ids(value)
    return ids[0] if ids else default


def special_token_ids(model_dir: str | Path) -> frozenset[int]:
    """Ids of the tokenizer's special added tokens (never emitted by the simulator as text)."""
    data = _read_json(Path(model_dir) / "tokenizer.json")
    return frozenset(t["id"] for t in data.get("added_tokens", []) if isinstance(t, dict) and t.get("special"))


def tokenizer_bundle(model_dir: str | Path) -> bytes:
    """A zip of the directory's tokenizer files, as SMG's GetTokenizer expects; FileNotFoundError if none."""
    root = Path(model_dir)
    buf = io.BytesIO()
    added: set[str] = set()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in TOKENIZER_FILES:
            if (root / name).is_file():
                zf.write(root / name, name)
                added.add(name)
        for pattern in TOKENIZER_GLOBS:
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
