"""`mimo-serve bench PART`: dispatch to each part's side-by-side benchmark."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

BENCHES: dict[str, str] = {
    "router": "bench.router",
    "http": "bench.http",  # the OpenAI HTTP front against SMG's
    "rollout": "bench.rollout",
    "verifier": "bench.verifier",
    "tokenizer": "bench.tokenizer",
    "engine": "bench.engine",
    "sim": "bench.sim",
    "autoscaler": "bench.autoscaler",
    "weights": "bench.weights",
    "vllm": "bench.vllm",  # opt-in: needs `make vllm-venv`
}


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHES:
        print(f"usage: mimo-serve bench {{{'|'.join(BENCHES)}}} [options]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        module = importlib.import_module(BENCHES[argv[0]])
    except ModuleNotFoundError as e:
        if e.name and BENCHES[argv[0]].startswith(e.name):
            print(f"mimo-serve bench {argv[0]}: not built yet", file=sys.stderr)
            return 2
        raise
    return int(module.main(list(argv[1:])) or 0)
