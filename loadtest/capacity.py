"""A sim profile's own capacity for a workload: its latency model run flat out, in process, on model time.

Every request is queued at once and the simulator steps with time scale 0 (no waiting), so the queue is never
empty: requests / simulated seconds is the highest rate the profile can serve that workload at, per worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from loadtest.mixes import RequestSpec


async def capacity_rps(profile_path: Path, model_dir: Path, specs: Sequence[RequestSpec]) -> float:
    from services.worker.engine_api import GenerateInput, SamplingConfig
    from services.worker.engines.sim.engine import SimEngine
    from services.worker.engines.sim.profile import load_profile

    engine = SimEngine(load_profile(profile_path), model_dir, time_scale=0)
    await engine.start()

    async def one(i: int, spec: RequestSpec) -> None:
        sampling = SamplingConfig(max_new_tokens=spec.output_tokens, ignore_eos=True, n=spec.num_samples)
        async for _ in engine.generate(GenerateInput(f"cap-{i}", spec.prompt_ids, sampling)):
            pass

    try:
        await asyncio.gather(*(one(i, s) for i, s in enumerate(specs)))
    finally:
        await engine.stop()
    return len(specs) / engine.simulated_s


def profile_capacity_rps(profile_path: Path, model_dir: Path, specs: Sequence[RequestSpec]) -> float:
    """Requests per model second one sim worker with this profile completes at saturation (token-id prompts)."""
    if any(s.messages for s in specs):
        raise ValueError("profile capacity needs token-id prompts (a synthetic mix or prompt_tokens rows)")
    return asyncio.run(capacity_rps(profile_path, model_dir, specs))
