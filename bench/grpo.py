"""Part 3 of `mimo-serve bench router`: cache-aware against round-robin routing on a GRPO-shaped workload.

A rollout batch of G prompt groups, each a long prompt (system prompt + problem) sampled n=16 times. The 16
samples go as 16 separate requests with the same prompt (not one request with n=16), so the router decides
where each sample runs: a router that keeps a group on one worker prefills its prompt once, one that spreads it
prefills it on every worker, and with a KV cache that cannot hold every group's prompt it prefills some again.
The whole batch is submitted at once, as an RL trainer does. Output lengths are drawn by the bench (lognormal,
seeded) and sent as max_new_tokens with ignore_eos, so every router does the same decode work; worker caches
are flushed before each run and each round uses fresh prompts.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from smg_grpc_proto.generated import common_pb2
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from bench.clients import Client, OursClient, Reply, SmgClient
from bench.common import PROFILES, Proc, Procs, median, ratio, say, table

# (name suffix, policy, extra flags). SMG's default cache_aware index is fed by the workers' KV events, which the
# sim worker does not publish (SMG logs "cache-aware routing sees nothing of its cache"); its `hash` index places
# requests by a hash of the prompt head and needs no events, so both are measured.
SMG_VARIANTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "cache_aware", ()),
    (" hash", "cache_aware", ("--cache-index", "hash", "--cache-boundaries", "256")),
    ("", "round_robin", ()),
)


def add_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("3. cache-aware routing (GRPO-shaped)")
    g.add_argument("--grpo-workers", type=int, default=8, help="sim workers (bench-grpo profile)")
    g.add_argument("--grpo-groups", type=int, default=64, help="prompt groups per rollout batch")
    g.add_argument("--grpo-samples", type=int, default=16, help="samples per prompt (separate requests)")
    g.add_argument("--grpo-prompt-tokens", type=int, default=4096, help="shared prompt length per group")
    g.add_argument("--grpo-output-median", type=int, default=256, help="lognormal median of output tokens")
    g.add_argument(
        "--grpo-output-sigma", type=float, default=0.0, help="0: every sample the median (SGLang's shared-prefix bench)"
    )
    g.add_argument("--grpo-output-max", type=int, default=1024)
    g.add_argument("--grpo-time-scale", type=float, default=1.0, help="sim worker time scale (1 = modelled H200)")
    g.add_argument("--grpo-rounds", type=int, default=2, help="alternating rounds (each runs every router once)")
    g.add_argument("--grpo-profile", default=str(PROFILES / "bench-grpo.json"))
    g.add_argument(
        "--grpo-smg-args",
        default="--worker-wedge-secs 120",
        help="extra flags for every SMG here (default: do not call a worker wedged after 3 s without a token, "
        "which non-streamed requests queued behind a long prefill always are)",
    )


def quick(args: argparse.Namespace) -> None:
    args.grpo_workers = min(args.grpo_workers, 2)
    args.grpo_groups = min(args.grpo_groups, 4)
    args.grpo_samples = min(args.grpo_samples, 4)
    args.grpo_prompt_tokens = min(args.grpo_prompt_tokens, 256)
    args.grpo_output_median = min(args.grpo_output_median, 8)
    args.grpo_output_max = min(args.grpo_output_max, 16)
    args.grpo_time_scale = min(args.grpo_time_scale, 0.05)
    args.grpo_rounds = 1


@dataclass(frozen=True, slots=True)
class Outcome:
    wall_s: float
    replies: tuple[Reply, ...]
    errors: int

    @property
    def output_tokens(self) -> int:
        return sum(r.output_tokens for r in self.replies)

    @property
    def hit_rate(self) -> float:
        return sum(r.cached_tokens for r in self.replies) / max(1, sum(r.prompt_tokens for r in self.replies))


def batch(args: argparse.Namespace, vocab: int, seed: int) -> list[tuple[list[int], int]]:
    """(prompt, output tokens) per sample, group after group."""
    rng = random.Random(seed)
    out = []
    for _ in range(args.grpo_groups):
        prompt = [rng.randrange(10, vocab) for _ in range(args.grpo_prompt_tokens)]
        for _ in range(args.grpo_samples):
            length = args.grpo_output_median * math.exp(args.grpo_output_sigma * rng.gauss(0, 1))
            out.append((prompt, max(1, min(args.grpo_output_max, round(length)))))
    return out


async def rollout(client: Client, work: Sequence[tuple[list[int], int]]) -> Outcome:
    async def one(ids: list[int], max_new: int) -> Reply | None:
        try:
            return await client.call(ids, max_new, timeout_s=900)
        except Exception as e:  # counted as an error in the table
            say(f"{client.name}: request failed: {str(e)[:200]}")
            return None

    t0 = time.perf_counter()
    replies = await asyncio.gather(*(one(ids, n) for ids, n in work))
    wall = time.perf_counter() - t0
    ok = tuple(r for r in replies if r is not None)
    return Outcome(wall, ok, len(replies) - len(ok))


async def flush(workers: Sequence[Proc]) -> None:
    async def one(w: Proc) -> None:
        async with grpc.aio.insecure_channel(w.target) as channel:
            reply = await pb_grpc.SglangSchedulerStub(channel).FlushCache(
                common_pb2.FlushCacheRequest(timeout_s=60), timeout=90
            )
            if not reply.success:
                raise RuntimeError(f"{w.name}: cache flush refused: {reply.message}")

    await asyncio.gather(*(one(w) for w in workers))


def _outputs(args: argparse.Namespace) -> str:
    if args.grpo_output_sigma <= 0:
        return f"{args.grpo_output_median} output tokens each"
    return (
        f"outputs lognormal median {args.grpo_output_median} sigma {args.grpo_output_sigma:g} "
        f"max {args.grpo_output_max}"
    )


async def cache_part(args: argparse.Namespace, procs: Procs, vocab: int) -> tuple[str, dict[str, float]]:
    from pathlib import Path

    workers = await procs.workers(args.grpo_workers, Path(args.grpo_profile), args.grpo_time_scale)
    tok = await procs.tokenizer()
    total = args.grpo_groups * args.grpo_samples
    admit = ["--max-in-flight", str(total), "--max-queue", str(total), "--queue-timeout-s", "900"]
    clients: dict[str, Client] = {}
    for policy in ("cache_aware", "round_robin"):
        clients[f"ours {policy}"] = OursClient((await procs.router(workers, tok, policy, extra=admit)).target)
    if not args.skip_smg:
        for name, policy, extra in SMG_VARIANTS:
            target = (await procs.smg(workers, policy, extra=[*extra, *args.grpo_smg_args.split()], tag=name)).target
            clients[f"smg {policy}{name}"] = SmgClient(target, await SmgClient.model_name(target), connections=total)
    names = list(clients)
    results: dict[str, list[Outcome]] = {k: [] for k in names}
    try:
        for r in range(args.grpo_rounds):
            work = batch(args, vocab, seed=100 + r)
            for name in names[r % len(names) :] + names[: r % len(names)]:
                await flush(workers)
                results[name].append(await rollout(clients[name], work))
                o = results[name][-1]
                say(f"cache round {r + 1}/{args.grpo_rounds}: {name}: {o.wall_s:.2f} s, hit rate {o.hit_rate:.2f}")
    finally:
        for c in clients.values():
            await c.close()
        procs.stop()
    samples_s = {k: median([len(o.replies) / o.wall_s for o in v]) for k, v in results.items()}
    tokens_s = {k: median([o.output_tokens / o.wall_s for o in v]) for k, v in results.items()}
    rr = tokens_s["ours round_robin"]
    rows = [
        [
            name,
            f"{median([o.wall_s for o in results[name]]):.2f}",
            f"{samples_s[name]:.1f}",
            f"{tokens_s[name]:.0f}",
            f"{median([o.hit_rate for o in results[name]]):.2f}",
            f"{ratio(tokens_s[name], rr):.2f}",
            sum(o.errors for o in results[name]),
        ]
        for name in names
    ]
    text = (
        f"3. Cache-aware vs round-robin, GRPO-shaped ({args.grpo_groups} groups x {args.grpo_samples} samples sent as "
        f"separate requests, {args.grpo_prompt_tokens}-token prompt per group, {_outputs(args)}, whole batch at once; "
        f"{args.grpo_workers} sim workers, profile {Path(args.grpo_profile).name} at time scale {args.grpo_time_scale:g}; "
        f"caches flushed before each run; {args.grpo_rounds} alternating rounds, medians)\n"
        + table(
            ["router policy", "wall s", "samples/s", "output tok/s", "prompt cache hit", "vs ours rr", "errors"], rows
        )
    )
    ca = tokens_s["ours cache_aware"]
    text += f"\nours cache_aware / ours round_robin: {ratio(ca, rr):.2f}"
    figures = {"cache_vs_rr": ratio(ca, rr)}
    smg_ca = {k: v for k, v in tokens_s.items() if k.startswith("smg cache_aware")}
    if smg_ca:
        best = max(smg_ca, key=smg_ca.__getitem__)
        figures["cache_vs_smg"] = ratio(ca, smg_ca[best])
        text += f"; ours cache_aware / best SMG cache_aware ({best}): {figures['cache_vs_smg']:.2f}"
        text += (
            f"\nSMG runs with `{args.grpo_smg_args}`; its default cache_aware index is fed by worker KV events, which "
            "sim workers do not publish, so the `hash` index (--cache-index hash --cache-boundaries 256) is shown too"
        )
    return text, figures
