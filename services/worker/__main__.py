"""`mimo-serve worker --engine torch|sim|sglang`: serve SGLang's scheduler protocol over one engine."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from services.common.config import add_server_args, server_settings
from services.common.server import Service, run
from services.worker.server import build_service

# The one table of engines: each package exports `build(args) -> Engine`. Only the chosen one is imported:
# torch is an optional dependency, and sglang needs its own install.
ENGINES = {
    "torch": "services.worker.engines.torch",
    "sim": "services.worker.engines.sim",
    "sglang": "services.worker.engines.sglang",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimo-serve worker", description=__doc__)
    parser.add_argument(
        "--engine",
        choices=tuple(ENGINES),
        required=True,
        help="torch: reference engine; sim: latency model; sglang: production",
    )
    parser.add_argument("--model", help="model directory (tokenizer files at least; weights for torch and sglang)")
    parser.add_argument("--served-model-name", help="name reported by GetModelInfo (default: the directory name)")
    parser.add_argument("--no-mtp", action="store_true", help="disable multi-token prediction (speculative decoding)")
    parser.add_argument("--profile", help="sim: latency profile JSON; sglang: launch profile JSON")
    parser.add_argument(
        "--weight-version", default="default", help="weight version reported until the first weight update"
    )
    torch = parser.add_argument_group("torch engine")
    torch.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    torch.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: per device)")
    torch.add_argument("--max-running-requests", type=int, help="largest running batch")
    torch.add_argument("--kv-cache-tokens", type=int, help="KV cache capacity in tokens")
    torch.add_argument(
        "--max-batch-tokens",
        type=int,
        help="token budget of one forward (prefill chunking; on CUDA a prompt token at context c "
        "counts 1 + c / A, docs/workers.md)",
    )
    torch.add_argument("--block-size", type=int, help="KV cache block (page) size in tokens")
    sim = parser.add_argument_group("sim engine")
    sim.add_argument("--time-scale", type=float, default=1.0, help="multiply every simulated cost (0: instant)")
    sglang = parser.add_argument_group("sglang engine")
    sglang.add_argument("--tp-size", type=int, help="tensor-parallel size")
    sglang.add_argument("--mem-fraction", type=float, help="SGLang --mem-fraction-static")
    sglang.add_argument("--context-length", type=int, help="SGLang --context-length")
    sglang.add_argument("--sglang-python", help="python that has sglang installed (default: this one)")
    sglang.add_argument("--sglang-port", type=int, help="loopback port for the SGLang child (default: a free one)")
    sglang.add_argument("--sglang-arg", action="append", default=[], help="extra SGLang argument (repeatable)")
    sglang.add_argument("--startup-timeout-s", type=float, help="how long SGLang may take to become healthy")
    add_server_args(parser, "worker", default_listen="127.0.0.1:31000", default_metrics=9200)
    return parser


def engine_module(name: str) -> ModuleType:
    """The engine package for `--engine name`; ModuleNotFoundError when its dependencies are not installed."""
    return importlib.import_module(ENGINES[name])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.engine in ("torch", "sim") and not args.model:
        print(f"mimo-serve worker: --model DIR is required for --engine {args.engine}", file=sys.stderr)
        return 2
    try:
        module = engine_module(args.engine)
    except ModuleNotFoundError as e:
        print(f"mimo-serve worker: the {args.engine} engine cannot load: {e}", file=sys.stderr)
        return 2
    try:
        engine = module.build(args)
    except (FileNotFoundError, ValueError) as e:  # bad flags, a missing model, an unusable SGLang install
        print(f"mimo-serve worker --engine {args.engine}: {e}", file=sys.stderr)
        return 2

    async def build() -> Service:
        return build_service(engine)

    return run(server_settings(args, "worker"), build)


if __name__ == "__main__":
    sys.exit(main())
