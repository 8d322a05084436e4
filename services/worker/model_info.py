"""GetModelInfo facts for the sim and torch engines, from the one model-directory reader (services.text.modeldir)."""

from __future__ import annotations

from pathlib import Path

from services.text.modeldir import read_model_dir
from services.worker.engine_api import EngineModelInfo

DEFAULT_CONTEXT_LENGTH = 32768
MAX_CONTEXT_LENGTH = 10_000_000  # beyond this a config's figure is a placeholder (HF writes 1e30), not a limit


def read_model_info(model_dir: str | Path, served_model_name: str | None = None) -> EngineModelInfo:
    """What the directory says (absolute paths); ModelDirError (a ValueError) when it is missing or malformed."""
    facts = read_model_dir(model_dir)
    max_len = facts.max_position_embeddings or facts.model_max_length
    if not 0 < max_len < MAX_CONTEXT_LENGTH:
        max_len = DEFAULT_CONTEXT_LENGTH
    return EngineModelInfo(
        model_path=str(facts.path),
        tokenizer_path=str(facts.path),
        served_model_name=served_model_name or facts.name,
        max_context_length=max_len,
        vocab_size=facts.vocab_size,
        eos_token_ids=facts.eos_token_ids,
        pad_token_id=facts.pad_token_id if facts.pad_token_id is not None else 0,
        bos_token_id=facts.bos_token_id if facts.bos_token_id is not None else 0,
        architectures=facts.architectures,
        model_type=facts.model_type,
    )
