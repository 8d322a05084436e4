"""The `sglang` worker: builds and supervises the SGLang server in gRPC mode, and fronts it.

`mimo-serve worker --engine sglang` calls `build(args)`; SglangSetupError (a ValueError) says what to install.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys

from services.common.net import free_port
from services.worker.engines.sglang.child_metrics import ChildMetrics, sidecar_port
from services.worker.engines.sglang.engine import SglangEngine
from services.worker.engines.sglang.launcher import SglangChild, SglangSetupError, check_versions, installed_versions
from services.worker.engines.sglang.profile import build_command, load_sglang_profile

__all__ = ["SglangEngine", "SglangSetupError", "build"]


def build(args: argparse.Namespace) -> SglangEngine:
    """Check the install, build the profile and command; the child starts in the engine's `start()`."""
    try:
        profile = load_sglang_profile(
            args.profile,
            model_path=args.model,
            served_model_name=args.served_model_name,
            tp_size=args.tp_size,
            mem_fraction_static=args.mem_fraction,
            context_length=args.context_length,
            max_running_requests=args.max_running_requests,
            is_mtp_enabled=False if args.no_mtp else None,
            python=args.sglang_python,
            startup_timeout_s=args.startup_timeout_s,
            extra_args=tuple(args.sglang_arg) or None,
        )
    except ValueError as e:
        raise SglangSetupError(str(e)) from e
    check_versions(installed_versions(profile.python or sys.executable), profile)
    port = args.sglang_port or _free_port_pair()
    child = SglangChild(build_command(profile, "127.0.0.1", port), f"127.0.0.1:{port}")
    metrics_url = f"http://127.0.0.1:{sidecar_port(port, profile.extra_args)}/metrics"
    return SglangEngine(profile, child, ChildMetrics(metrics_url) if profile.is_metrics_enabled else None)


def _free_port_pair() -> int:
    """A free port whose next one is free too: SGLang's metrics sidecar takes `--port + 1` by default."""
    for _ in range(50):
        port = free_port()
        with contextlib.suppress(OSError, OverflowError), socket.socket() as s:
            s.bind(("127.0.0.1", port + 1))
            return port
    raise SglangSetupError("no two adjacent free loopback ports for the SGLang child; pass --sglang-port")
