"""`mimo-serve verifier`: the reward/verifier service (math answers and sandboxed code)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from services.common.config import add_server_args, server_settings
from services.common.server import Service, run
from services.verifier.pool import PoolSettings
from services.verifier.sandbox import Limits, Sandbox, SandboxConfig
from services.verifier.selftest import self_test
from services.verifier.verifier import Verifier, VerifierSettings

log = logging.getLogger("services.verifier")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    cpus = os.cpu_count() or 1
    p = argparse.ArgumentParser(prog="mimo-serve verifier", description=__doc__)
    add_server_args(p, "verifier", "127.0.0.1:50053", 9102)
    m = p.add_argument_group("math")
    m.add_argument("--processes", type=int, default=cpus, help="math worker processes (default: CPU count)")
    m.add_argument("--math-timeout-s", type=int, default=5, help="math-verify's parse and verify timeouts (whole s)")
    m.add_argument("--math-hard-deadline-s", type=float, default=12.0, help="kill and replace a worker past this")
    m.add_argument("--math-memory-mb", type=int, default=2048, help="address-space limit of a math worker")
    c = p.add_argument_group("code")
    c.add_argument("--sandboxes", type=int, default=2 * cpus, help="sandboxes running at once")
    c.add_argument("--time-limit-s", type=float, default=2.0, help="default CPU time limit per test")
    c.add_argument("--memory-mb", type=int, default=1024, help="default address-space limit per test")
    c.add_argument("--output-limit-kb", type=int, default=1024, help="stdout/stderr cap per test")
    c.add_argument("--bwrap", default="bwrap", help="the bubblewrap binary")
    c.add_argument("--sandbox-python", default="/usr/bin/python3", help="the Python that runs solutions")
    c.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help="DANGEROUS: run untrusted code with no isolation at all (only for machines without bubblewrap)",
    )
    p.add_argument("--max-pending-tasks", type=int, default=20_000, help="admission limit (RESOURCE_EXHAUSTED past it)")
    return p.parse_args(list(argv))


def settings_from(args: argparse.Namespace) -> VerifierSettings:
    return VerifierSettings(
        math=PoolSettings(
            num_processes=max(1, args.processes),
            hard_deadline_s=args.math_hard_deadline_s,
            parse_timeout_s=max(1, args.math_timeout_s),
            verify_timeout_s=max(1, args.math_timeout_s),
            memory_limit_bytes=(args.math_memory_mb << 20) if args.math_memory_mb > 0 else None,
        ),
        sandbox=SandboxConfig(is_isolated=not args.unsafe_no_sandbox, bwrap=args.bwrap, python=args.sandbox_python),
        limits=Limits(
            time_limit_s=args.time_limit_s,
            memory_bytes=args.memory_mb << 20,
            output_bytes=args.output_limit_kb << 10,
        ),
        max_sandboxes=max(1, args.sandboxes),
        max_pending_tasks=args.max_pending_tasks,
    )


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    if settings.sandbox.is_isolated:
        problems = asyncio.run(self_test(Sandbox(settings.sandbox)))
        if problems:
            print("mimo-serve verifier: refusing to start, the code sandbox does not isolate:", file=sys.stderr)
            for problem in problems:
                print(f"  - {problem}", file=sys.stderr)
            print("Fix the sandbox (see services/verifier/sandbox.py), or pass --unsafe-no-sandbox.", file=sys.stderr)
            return 3

    async def build() -> Service:
        from services.verifier.server import make_service

        if not settings.sandbox.is_isolated:
            log.warning("UNSAFE: --unsafe-no-sandbox: untrusted code runs with NO isolation on this host")
        verifier = Verifier(settings)
        verifier.start()  # worker processes exist before the gRPC server does
        log.info(
            "verifier ready",
            extra={
                "math_processes": settings.math.num_processes,
                "sandboxes": settings.max_sandboxes,
                "sandbox": "bubblewrap" if settings.sandbox.is_isolated else "NONE (unsafe)",
                "memory_cgroups": verifier.sandbox.cgroups.is_enabled,
                "cpp": settings.sandbox.cxx is not None,
            },
        )
        return make_service(verifier)

    return run(server_settings(args, "verifier"), build)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
