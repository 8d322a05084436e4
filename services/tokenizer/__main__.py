"""`mimo-serve tokenizer --model DIR`: serve mimo.v1.Tokenizer for a HF model directory's tokenizer."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from services.common.config import add_server_args, env_default, server_settings
from services.common.server import Service, run
from services.text.artifacts import ArtifactsError, load_tokenizer_dir
from services.tokenizer.limits import Limits
from services.tokenizer.metrics import METRICS
from services.tokenizer.server import build_service

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = "models/tiny-mimo"


def resolve_model_dir(value: str) -> Path:
    """A relative path is taken from the working directory, else from the repository root."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists() or not (REPO_ROOT / path).exists():
        return path
    return REPO_ROOT / path


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mimo-serve tokenizer", description=__doc__)
    parser.add_argument(
        "--model",
        default=env_default("tokenizer", "model", DEFAULT_MODEL),
        help="model directory with tokenizer.json and a chat template (tokenizer_config.json or chat_template.jinja)",
    )
    defaults = Limits()
    g = parser.add_argument_group("limits")
    g.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size, help="texts or sequences per request")
    g.add_argument("--max-text-bytes", type=int, default=defaults.max_text_bytes, help="UTF-8 bytes per text")
    g.add_argument("--max-messages", type=int, default=defaults.max_messages, help="messages per chat")
    g.add_argument("--max-sequence-tokens", type=int, default=defaults.max_sequence_tokens, help="ids per sequence")
    g = parser.add_argument_group("cache of recent prompts")
    g.add_argument("--cache-entries", type=int, default=4096, help="texts kept (0 disables the cache)")
    g.add_argument("--cache-tokens", type=int, default=4 << 20, help="token ids kept across all entries")
    add_server_args(parser, "tokenizer", default_listen="0.0.0.0:50052", default_metrics=9101)
    return parser.parse_args(list(argv))


def main(argv: Sequence[str]) -> int:
    """Load the tokenizer (exit 2 with a clear message if the directory is incomplete), then serve until SIGTERM."""
    args = parse_args(argv)
    model_dir = resolve_model_dir(args.model)
    try:
        loaded = load_tokenizer_dir(model_dir)
    except (ArtifactsError, OSError) as e:
        print(f"mimo-serve tokenizer: {e}", file=sys.stderr)
        return 2
    limits = Limits(args.max_batch_size, args.max_text_bytes, args.max_messages, args.max_sequence_tokens)

    async def build() -> Service:
        info = loaded.info
        logging.getLogger("tokenizer").info(
            "tokenizer loaded",
            extra={"dir": str(model_dir), "vocab_size": info.vocab_size, "artifacts_sha256": info.artifacts_sha256},
        )
        return build_service(loaded, limits, METRICS, args.cache_entries, args.cache_tokens)

    return run(server_settings(args, "tokenizer"), build)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
