"""Start the stack, wait for the router's health, send one Rollout — N times back to back; print how many succeeded.

    .venv/bin/python scripts/readiness_trials.py --trials 20 --engine torch

The check a new user makes (issue 24): a router that reports SERVING must be able to serve the first request.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from mimo_client import AsyncMimoClient, MathTask, MimoError, RolloutPrompt

from services.stack import Stack, random_ports_plan

REPO = Path(__file__).resolve().parents[1]


async def trial(engine: str, log_dir: Path) -> str:
    plan = random_ports_plan(REPO / "models" / "tiny-mimo", engine=engine, num_workers=2)
    stack = Stack(plan.specs(), log_dir)
    await stack.start()  # returns once every part, the router included, reports SERVING
    try:
        prompt = RolloutPrompt(
            "p0", messages=[{"role": "user", "content": "What is 12 + 30?"}], reward=MathTask(["42"])
        )
        async with AsyncMimoClient(stack.child("router").spec.target) as client:
            events = [e async for e in client.rollout([prompt], samples_per_prompt=2, max_new_tokens=64)]
        return "ok" if events and type(events[-1]).__name__ == "RolloutFinished" else f"no finish: {events[-1:]}"
    except MimoError as e:
        return f"failed: {e}"
    finally:
        await stack.stop()


async def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--engine", choices=["torch", "sim"], default="torch")
    args = p.parse_args(argv)
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.trials):
            started = time.monotonic()
            outcome = await trial(args.engine, Path(tmp) / str(i))
            outcomes.append(outcome)
            print(f"trial {i + 1}: {outcome} ({time.monotonic() - started:.1f}s)", flush=True)
    ok = outcomes.count("ok")
    print(f"readiness trials ({args.engine}): {ok}/{args.trials} succeeded")
    return 0 if ok == args.trials else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
