"""The `mimo-serve` command line: one subcommand per part, each delegating to that part's `main(argv)`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module holding `main(argv) -> int`, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("services.up", "start the whole stack locally (tokenizer, verifier, workers, router)"),
    "router": ("services.router.__main__", "serve the public Inference and Rollout APIs"),
    "worker": ("services.worker.__main__", "serve a worker: --engine torch | sim | sglang"),
    "tokenizer": ("services.tokenizer.__main__", "serve the tokenizer service"),
    "verifier": ("services.verifier.__main__", "serve the reward/verifier service"),
    "operator": ("operators.autoscaler.main", "run the MiMoPool operator and autoscaler (kopf)"),
    "demo": ("services.demo", "a streamed chat and a small rollout with rewards, for a person"),
    "bench": (
        "bench",
        "side-by-side benchmarks: router | http | rollout | verifier | tokenizer | engine | sim | autoscaler | weights | vllm",
    ),
}


def _load(module: str):
    try:
        return importlib.import_module(module).main
    except ModuleNotFoundError as e:
        if e.name and (module.startswith(e.name) or e.name.startswith(module.rsplit(".", 1)[0])):
            return None
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mimo-serve",
        description="MiMo Serve: Kubernetes-native serving of MiMo-7B with multi-token prediction.",
        epilog="Run `mimo-serve COMMAND --help` for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    args, rest = parser.parse_known_args(argv)
    module, _ = COMMANDS[args.command]
    entry = _load(module)
    if entry is None:
        print(f"mimo-serve {args.command}: not built yet", file=sys.stderr)
        return 2
    return int(entry(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
