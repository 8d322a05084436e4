"""`mimo-serve up`: the whole stack locally — tokenizer, verifier, N workers on the tiny model, the router."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from services.stack import Stack, StackPlan, wait_routable

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "models" / "tiny-mimo"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mimo-serve up", description=__doc__)
    p.add_argument(
        "--engine", choices=["torch", "sim"], default="torch", help="worker engine (default: torch on the tiny model)"
    )
    p.add_argument("--workers", type=int, default=2, help="number of workers")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="HF-format MiMo model directory")
    p.add_argument("--listen", default="127.0.0.1:50051", help="router HOST:PORT")
    p.add_argument("--http-port", type=int, default=8000, help="the router's OpenAI HTTP API port (0: off)")
    p.add_argument("--policy", default="cache_aware")
    p.add_argument("--log-dir", type=Path, default=Path("out/logs"), help="each part's log file goes here")
    p.add_argument("--demo", action="store_true", help="run `mimo-serve demo` against the stack, then keep serving")
    p.add_argument("--exit-after-demo", action="store_true", help="with --demo: stop the stack after the demo")
    return p


def plan_of(args: argparse.Namespace) -> StackPlan:
    port = args.listen.rpartition(":")[2]
    return StackPlan(
        model=args.model.resolve(),
        engine=args.engine,
        num_workers=args.workers,
        router_port=int(port),
        http_port=args.http_port,
        policy=args.policy,
    )


def print_endpoints(stack: Stack, started: float) -> None:
    print(f"\nMiMo Serve is up in {time.monotonic() - started:.1f}s:", flush=True)
    for child in stack.children:
        metrics = f"  metrics http://127.0.0.1:{child.spec.metrics_port}/metrics" if child.spec.metrics_port else ""
        print(f"  {child.spec.name:<10} grpc://{child.spec.target}{metrics}")
    args = stack.child("router").spec.args
    http = args[args.index("--http-listen") + 1] if "--http-listen" in args else ""
    if http:
        print(f"  {'openai':<10} http://{http}/v1  (curl http://{http}/v1/models)")
    print(
        f"  logs in {stack.log_dir}/\nTry: mimo-serve demo --target {stack.child('router').spec.target}\n"
        "Ctrl-C stops everything.",
        flush=True,
    )


async def serve(args: argparse.Namespace) -> int:
    started = time.monotonic()
    if not (args.model / "tokenizer.json").exists():
        print(
            f"mimo-serve up: --model: {args.model} has no tokenizer.json (an HF-format MiMo directory is needed)",
            file=sys.stderr,
        )
        return 2
    stack = Stack(plan_of(args).specs(), args.log_dir)
    print(f"starting tokenizer, verifier, {args.workers} {args.engine} worker(s) and the router…", flush=True)
    try:
        await stack.start()
    except RuntimeError as e:
        print(f"mimo-serve up: {e}", file=sys.stderr)
        return 1
    routable = await wait_routable(stack.child("router").spec.target, args.workers, timeout_s=180)
    if routable < args.workers:
        print(f"mimo-serve up: only {routable} of {args.workers} workers became routable", file=sys.stderr)
    print_endpoints(stack, started)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    if args.demo:
        from services.demo import run_demo

        code = await run_demo(stack.child("router").spec.target)
        if args.exit_after_demo:
            stop.set()
    await stop.wait()
    print("stopping…", flush=True)
    await stack.stop()
    print("stopped.", flush=True)
    return code


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(serve(args))
    return 130
