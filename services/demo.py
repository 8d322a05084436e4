"""`mimo-serve demo`: a streamed chat (reasoning apart from the answer) and a small rollout with rewards."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Sequence

from mimo_client import AsyncMimoClient, MathTask, MimoError, RolloutPrompt
from mimo_client import types as t

DIM, BOLD, GREEN, RED, RESET = (
    ("\033[2m", "\033[1m", "\033[32m", "\033[31m", "\033[0m") if sys.stdout.isatty() else ("",) * 5
)


def problems(seed: int, count: int) -> list[tuple[str, int]]:
    """Grade-school problems in the shapes the tiny MiMo was trained on, with their answers."""
    rng = random.Random(seed)
    out: list[tuple[str, int]] = []
    while len(out) < count:
        kind = len(out) % 4
        a, b, d = rng.randint(10, 99), rng.randint(10, 99), rng.randint(2, 9)
        if kind == 0:
            out.append((f"What is {a} + {b}?", a + b))
        elif kind == 1:
            hi, lo = max(a, b), min(a, b)
            out.append((f"Compute {hi} - {lo}.", hi - lo))
        elif kind == 2:
            out.append((f"What is {a} * {d}?", a * d))
        else:
            x, c = rng.randint(10, 99), rng.randint(1, 99)
            out.append((f"Solve for x: {d}x + {c} = {d * x + c}.", x))
    return out


def chat(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": ""}, {"role": "user", "content": question}]


async def stream_chat(client: AsyncMimoClient, question: str) -> None:
    print(f"{BOLD}user>{RESET} {question}\n{BOLD}mimo>{RESET} ", end="", flush=True)
    in_reasoning, started, usage = False, time.monotonic(), None
    async for delta in client.chat_stream(chat(question), temperature=0.0, max_new_tokens=512):
        if delta.reasoning:
            if not in_reasoning:
                print(f"{DIM}[thinking]\n", end="")
                in_reasoning = True
            print(delta.reasoning, end="", flush=True)
        if delta.text:
            if in_reasoning:
                print(f"{RESET}\n{BOLD}[answer]{RESET} ", end="")
                in_reasoning = False
            print(delta.text, end="", flush=True)
        usage = delta.usage or usage
    print(RESET)
    if usage is not None:
        print(
            f"{DIM}({usage.completion_tokens} tokens, {usage.reasoning_tokens} of them reasoning, "
            f"{time.monotonic() - started:.2f}s){RESET}\n"
        )


async def rollout(client: AsyncMimoClient, seed: int, num_prompts: int, samples: int) -> None:
    items = problems(seed + 1, num_prompts)
    prompts = [RolloutPrompt(f"q{i}", messages=chat(q), reward=MathTask([str(a)])) for i, (q, a) in enumerate(items)]
    print(
        f"{BOLD}rollout:{RESET} {num_prompts} prompts x {samples} samples, rewards from the verifier as samples finish"
    )
    groups: list[t.GroupFinished] = []
    finished: t.RolloutFinished | None = None
    async for event in client.rollout(prompts, samples_per_prompt=samples, max_new_tokens=512, progress=True):
        if isinstance(event, t.GroupFinished):
            groups.append(event)
        elif isinstance(event, t.RolloutFinished):
            finished = event
    for g in sorted(groups, key=lambda g: g.prompt_index):
        question, answer = items[g.prompt_index]
        color = GREEN if g.pass_rate >= 0.5 else RED
        print(f"  {color}{g.pass_rate:>5.0%}{RESET} correct  {question}  (answer {answer})")
    if finished is not None:
        print(
            f"{BOLD}summary:{RESET} {finished.num_samples_finished} samples in {finished.wall_s:.1f}s "
            f"({finished.samples_per_s:.1f} samples/s, {finished.completion_tokens_per_s:.0f} tokens/s); "
            f"mean pass rate {sum(g.pass_rate for g in groups) / max(1, len(groups)):.0%}; "
            f"{sum(g.all_correct or g.all_wrong for g in groups)} groups with no reward variance"
        )


async def run_demo(target: str, seed: int = 0, num_prompts: int = 8, samples: int = 4) -> int:
    try:
        async with AsyncMimoClient(target) as client:
            models = await client.list_models()
            print(
                f"\nconnected to {target}: model {models[0].id!r}, {models[0].num_workers} worker(s), "
                f"MTP {'on' if models[0].mtp_enabled else 'off'}\n"
            )
            await stream_chat(client, problems(seed, 1)[0][0])
            await rollout(client, seed, num_prompts, samples)
    except MimoError as e:
        print(f"mimo-serve demo: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="mimo-serve demo", description=__doc__)
    p.add_argument("--target", default="127.0.0.1:50051", help="the router HOST:PORT")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--samples", type=int, default=4)
    args = p.parse_args(argv)
    return asyncio.run(run_demo(args.target, args.seed, args.prompts, args.samples))
