"""`mimo-serve worker --engine torch|sim|sglang`: serve SGLang's scheduler protocol over one engine."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from services.common.config import add_server_args, server_settings
from services.common.server import Service, run

ENGINES = ("torch", "sim", "sglang")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimo-serve worker", description=__doc__)
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        required=True,
        help="torch: reference engine; sim: latency model; sglang: production",
    )
    parser.add_argument("--model", help="model directory (tokenizer files at least; weights for torch and sglang)")
    parser.add_argument("--served-model-name", help="name reported by GetModelInfo (default: the directory name)")
    parser.add_argument("--no-mtp", action="store_true", help="disable multi-token prediction (speculative decoding)")
    parser.add_argument("--profile", help="sim: latency profile JSON; sglang: launch profile JSON")
    torch = parser.add_argument_group("torch engine")
    torch.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    torch.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: per device)")
    torch.add_argument("--max-running-requests", type=int, help="largest running batch")
    torch.add_argument("--kv-cache-tokens", type=int, help="KV cache capacity in tokens")
    torch.add_argument("--max-batch-tokens", type=int, help="token budget of one forward (prefill chunking)")
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


def _sim_build(args: argparse.Namespace):
    from services.worker.engines.sim.engine import SimEngine
    from services.worker.engines.sim.profile import load_profile
    from services.worker.server import build_service

    profile = load_profile(args.profile).with_overrides(
        is_mtp_enabled=False if args.no_mtp else None,
        max_running_requests=args.max_running_requests,
        kv_capacity_tokens=args.kv_cache_tokens,
    )

    engine = SimEngine(profile, args.model, args.served_model_name, args.time_scale)

    async def build() -> Service:
        return build_service(engine)

    return build


def _torch_build(args: argparse.Namespace):
    from services.worker.server import build_service

    engine_module = importlib.import_module("services.worker.engines.torch")

    async def build() -> Service:
        return build_service(engine_module.build_engine(args))

    return build


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.engine in ("torch", "sim") and not args.model:
        print(f"mimo-serve worker: --model DIR is required for --engine {args.engine}", file=sys.stderr)
        return 2
    try:
        if args.engine == "sim":
            build = _sim_build(args)
        elif args.engine == "torch":
            try:
                build = _torch_build(args)
            except ModuleNotFoundError as e:
                if e.name and e.name.startswith("services.worker.engines.torch"):
                    print("mimo-serve worker: torch engine not built yet", file=sys.stderr)
                    return 2
                raise
        else:
            from services.worker.engines.sglang.launcher import SglangSetupError, sglang_build

            try:
                build = sglang_build(args)
            except SglangSetupError as e:
                print(f"mimo-serve worker --engine sglang: {e}", file=sys.stderr)
                return 2
    except (FileNotFoundError, ValueError) as e:
        print(f"mimo-serve worker: {e}", file=sys.stderr)
        return 2
    return run(server_settings(args, "worker"), build)


if __name__ == "__main__":
    sys.exit(main())
