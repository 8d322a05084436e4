"""What an open-loop run sends: requests from a JSONL file or a seeded synthetic mix, within the model's context.

A request is token ids (exact prompt length) or chat messages, with the output length it must produce
(`ignore_eos`, so the server generates exactly that many tokens, as `vllm bench serve` does).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TEXT_IDS = (10, 500)  # token ids the synthetic prompts draw from (plain text ids of the tiny model's vocabulary)


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request: a prompt (token ids or messages), the tokens to generate, and samples per prompt."""

    output_tokens: int
    prompt_ids: tuple[int, ...] = ()
    messages: tuple[tuple[str, str], ...] = ()
    num_samples: int = 1

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)


def _lognormal(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return max(low, min(high, round(median * math.exp(sigma * rng.gauss(0.0, 1.0)))))


def _ids(rng: random.Random, n: int) -> tuple[int, ...]:
    return tuple(rng.randrange(*TEXT_IDS) for _ in range(n))


def mimo_math(rng: random.Random) -> RequestSpec:
    """Short prompts (lognormal, median 120 tokens), long-tailed reasoning (lognormal, median 800, sigma 0.8)."""
    return RequestSpec(_lognormal(rng, 800, 0.8, 16, 32768), _ids(rng, _lognormal(rng, 120, 0.5, 16, 4096)))


def mimo_code(rng: random.Random) -> RequestSpec:
    """Long prompts (lognormal, median 1500 tokens, sigma 0.3), short outputs (lognormal, median 16, sigma 0.5)."""
    return RequestSpec(_lognormal(rng, 16, 0.5, 4, 4096), _ids(rng, _lognormal(rng, 1500, 0.3, 256, 32768)))


def rollout(rng: random.Random) -> RequestSpec:
    """RL groups: one math prompt, 8 samples, long-tailed outputs (as mimo-math)."""
    spec = mimo_math(rng)
    return RequestSpec(spec.output_tokens, spec.prompt_ids, num_samples=8)


def short(rng: random.Random) -> RequestSpec:
    """Small requests for smoke runs: 32 prompt tokens, 8..32 output tokens."""
    return RequestSpec(rng.randint(8, 32), _ids(rng, 32))


MIXES: dict[str, Callable[[random.Random], RequestSpec]] = {
    "mimo-math": mimo_math,
    "mimo-code": mimo_code,
    "rollout": rollout,
    "short": short,
}


def fit_context(spec: RequestSpec, max_context_tokens: int) -> RequestSpec:
    """Cut the prompt to leave room for at least one output token, then the output to what the context holds."""
    prompt = spec.prompt_ids[: max(1, max_context_tokens - 1)]
    output = max(1, min(spec.output_tokens, max_context_tokens - len(prompt)))
    return RequestSpec(output, prompt, spec.messages, spec.num_samples)


def synthetic(name: str, num: int, seed: int, max_context_tokens: int) -> list[RequestSpec]:
    if name not in MIXES:
        raise ValueError(f"--mix: unknown {name!r}; choose from {', '.join(MIXES)} or a .jsonl file")
    rng = random.Random(seed)
    return [fit_context(MIXES[name](rng), max_context_tokens) for _ in range(num)]


def from_jsonl(path: Path, max_context_tokens: int, seed: int = 0) -> list[RequestSpec]:
    """Lines of {"messages": [{"role","content"}...], "output_tokens": N} or {"prompt_tokens": P, "output_tokens": N}."""
    rng = random.Random(seed)
    specs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{where}: not JSON: {e}") from None
        output = row.get("output_tokens")
        if not isinstance(output, int) or output < 1:
            raise ValueError(f"{where}: output_tokens must be a positive integer")
        samples = int(row.get("n", 1))
        if "messages" in row:
            messages = tuple((str(m["role"]), str(m["content"])) for m in row["messages"])
            specs.append(RequestSpec(min(output, max_context_tokens), messages=messages, num_samples=samples))
        elif isinstance(row.get("prompt_tokens"), int) and row["prompt_tokens"] >= 1:
            spec = RequestSpec(output, _ids(rng, row["prompt_tokens"]), num_samples=samples)
            specs.append(fit_context(spec, max_context_tokens))
        else:
            raise ValueError(f"{where}: needs messages or a positive prompt_tokens")
    if not specs:
        raise ValueError(f"{path}: no requests")
    return specs
