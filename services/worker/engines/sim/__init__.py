"""The `sim` worker engine: a latency model of a MiMo-7B SGLang worker (see docs/workers.md).

`mimo-serve worker --engine sim --model DIR` calls `build(args)`.
"""

from __future__ import annotations

import argparse

from services.worker.engines.sim.engine import SimEngine
from services.worker.engines.sim.profile import load_profile

__all__ = ["SimEngine", "build"]


def build(args: argparse.Namespace) -> SimEngine:
    """A SimEngine from `mimo-serve worker` flags: the profile, with the flags that override it."""
    profile = load_profile(args.profile).with_overrides(
        is_mtp_enabled=False if args.no_mtp else None,
        max_running_requests=args.max_running_requests,
        kv_capacity_tokens=args.kv_cache_tokens,
    )
    return SimEngine(profile, args.model, args.served_model_name, args.time_scale, args.weight_version)
