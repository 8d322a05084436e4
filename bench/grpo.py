"""Part 3 of `mimo-serve bench router`: cache-aware against round-robin routing on a GRPO-shaped workload.

A rollout batch of G prompt groups, each a long prompt (system prompt + problem) sampled n=16 times. The 16
samples go as 16 separate requests with the same prompt (not one request with n=16), so the router decides
where each sample runs: a router that keeps a group on one worker prefills its prompt once, one that spreads it
prefills it on every worker, and with a KV cache that cannot hold every group's prompt it prefills some again.
The whole batch is submitted at once, as an RL trainer does. Output lengths are drawn by the bench (lognormal,
seeded) and sent as max_new_tokens with ignore_eos, so every router does the same decode work; worker caches
are flushed before each run and each round uses fresh prompts. The sim workers publish KV events, so the rows
fed by them (ours with --kv-events, SMG's default event-built index) run beside the routers' own guesses;
--grpo-arrival-s spreads the requests over time, the shape where events reach a router before it routes.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import aiohttp
import grpc
from prometheus_client.parser import text_string_to_metric_families
from smg_grpc_proto.generated import common_pb2
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from bench.clients import Client, OursClient, Reply, SmgClient
from bench.common import PROFILES, Proc, Procs, median, ratio, say, table

# (name suffix, policy, extra flags) of our routers: cache_aware on its own guess (what it sent where), on the
# workers' KV events (--kv-events), and round_robin.
OURS_VARIANTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "cache_aware", ()),
    (" kv-events", "cache_aware", ("--kv-events",)),
    ("", "round_robin", ()),
)
# SMG's: its default cache_aware index (--kv-index positional) is built from the workers' KV events, which the sim
# workers publish; its `hash` index places requests by a hash of the prompt head and needs no events.
SMG_VARIANTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (" kv-events", "cache_aware", ()),
    (" hash", "cache_aware", ("--cache-index", "hash", "--cache-boundaries", "256")),
    ("", "round_robin", ()),
)
# SMG's own counters that show it consumed the workers' KV events (summed over workers); every branch its
# cache_aware policy took is shown beside them (`event_hit`: routed on a prefix found in the event-built index,
# `tree_match`: on its own approximate tree of what it sent).
SMG_EVENT_SAMPLES = {
    "blocks stored": ("smg_kv_event_blocks_total", "op", "stored"),
    "blocks removed": ("smg_kv_event_blocks_total", "op", "removed"),
    "batches applied": ("smg_kv_event_batches_total", "disposition", "applied"),
}
SMG_BRANCHES = "smg_cache_aware_policy_branch_total"


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
    g.add_argument(
        "--grpo-arrival-s",
        type=float,
        default=0.0,
        help="0: the whole batch at once (an RL trainer's rollout); > 0: each request sent at a seeded uniform time "
        "in this many seconds, so a group's later samples can arrive after its first prefill (where KV events help)",
    )
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


def arrivals(args: argparse.Namespace, num_requests: int, seed: int) -> list[float]:
    """Send time of each request after the batch starts (all 0: the whole batch at once)."""
    if args.grpo_arrival_s <= 0:
        return [0.0] * num_requests
    rng = random.Random(seed)
    return [rng.uniform(0, args.grpo_arrival_s) for _ in range(num_requests)]


async def rollout(client: Client, work: Sequence[tuple[list[int], int]], send_at_s: Sequence[float]) -> Outcome:
    async def one(ids: list[int], max_new: int, at_s: float) -> Reply | None:
        if at_s > 0:
            await asyncio.sleep(at_s)
        try:
            return await client.call(ids, max_new, timeout_s=900)
        except Exception as e:  # counted as an error in the table
            say(f"{client.name}: request failed: {str(e)[:200]}")
            return None

    t0 = time.perf_counter()
    replies = await asyncio.gather(*(one(ids, n, at) for (ids, n), at in zip(work, send_at_s, strict=True)))
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


async def smg_event_counts(smg: Proc) -> dict[str, float]:
    """SMG_EVENT_SAMPLES and SMG_BRANCHES from the SMG's Prometheus listener (the --prometheus-port Procs.smg set)."""
    argv = [str(a) for a in cast(list[str], smg.popen.args)]
    url = f"http://127.0.0.1:{argv[argv.index('--prometheus-port') + 1]}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url, timeout=aiohttp.ClientTimeout(10)) as r:
        text = await r.text()
    out = dict.fromkeys(SMG_EVENT_SAMPLES, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == SMG_BRANCHES:
                out[f"branch {sample.labels.get('branch')}"] = sample.value
            for what, (name, label, value) in SMG_EVENT_SAMPLES.items():
                if sample.name == name and sample.labels.get(label) == value:
                    out[what] += sample.value
    return out


def _outputs(args: argparse.Namespace) -> str:
    if args.grpo_output_sigma <= 0:
        return f"{args.grpo_output_median} output tokens each"
    return (
        f"outputs lognormal median {args.grpo_output_median} sigma {args.grpo_output_sigma:g} "
        f"max {args.grpo_output_max}"
    )


def _arrival(args: argparse.Namespace) -> str:
    if args.grpo_arrival_s <= 0:
        return "whole batch at once"
    return f"requests sent at uniform random times over {args.grpo_arrival_s:g} s"


async def cache_part(args: argparse.Namespace, procs: Procs, vocab: int) -> tuple[str, dict[str, float]]:
    from pathlib import Path

    workers = await procs.workers(args.grpo_workers, Path(args.grpo_profile), args.grpo_time_scale)
    tok = await procs.tokenizer()
    total = args.grpo_groups * args.grpo_samples
    admit = ["--max-in-flight", str(total), "--max-queue", str(total), "--queue-timeout-s", "900"]
    clients: dict[str, Client] = {}
    for name, policy, extra in OURS_VARIANTS:
        target = (await procs.router(workers, tok, policy, extra=[*admit, *extra])).target
        clients[f"ours {policy}{name}"] = OursClient(target)
    smgs: dict[str, Proc] = {}
    if not args.skip_smg:
        for name, policy, extra in SMG_VARIANTS:
            smgs[f"smg {policy}{name}"] = await procs.smg(
                workers, policy, extra=[*extra, *args.grpo_smg_args.split()], tag=name
            )
            target = smgs[f"smg {policy}{name}"].target
            clients[f"smg {policy}{name}"] = SmgClient(target, await SmgClient.model_name(target), connections=total)
    names = list(clients)
    events: dict[str, dict[str, float]] = {}
    results: dict[str, list[Outcome]] = {k: [] for k in names}
    try:
        for r in range(args.grpo_rounds):
            work = batch(args, vocab, seed=100 + r)
            send_at_s = arrivals(args, len(work), seed=200 + r)
            for name in names[r % len(names) :] + names[: r % len(names)]:
                await flush(workers)
                watched = smgs.get(name) if name.startswith("smg cache_aware") else None
                before = await smg_event_counts(watched) if watched else {}
                results[name].append(await rollout(clients[name], work, send_at_s))
                if watched:  # what this SMG received and decided during its own runs only
                    after = await smg_event_counts(watched)
                    seen = events.setdefault(name, {})
                    for k, v in after.items():
                        seen[k] = seen.get(k, 0.0) + v - before.get(k, 0.0)
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
        f"separate requests, {args.grpo_prompt_tokens}-token prompt per group, {_outputs(args)}, {_arrival(args)}; "
        f"{args.grpo_workers} sim workers, profile {Path(args.grpo_profile).name} at time scale {args.grpo_time_scale:g}; "
        f"caches flushed before each run; {args.grpo_rounds} alternating rounds, medians)\n"
        + table(
            ["router policy", "wall s", "samples/s", "output tok/s", "prompt cache hit", "vs ours rr", "errors"], rows
        )
    )
    ca, kv = tokens_s["ours cache_aware"], tokens_s["ours cache_aware kv-events"]
    text += f"\nours cache_aware / ours round_robin: {ratio(ca, rr):.2f}; ours cache_aware kv-events / ours round_robin: {ratio(kv, rr):.2f}"
    figures = {"cache_vs_rr": ratio(ca, rr), "kv_events_vs_rr": ratio(kv, rr)}
    smg_ca = {k: v for k, v in tokens_s.items() if k.startswith("smg cache_aware")}
    if smg_ca:
        best = max(smg_ca, key=smg_ca.__getitem__)
        figures["cache_vs_smg"] = ratio(ca, smg_ca[best])
        figures["kv_events_vs_smg_kv_events"] = ratio(kv, tokens_s["smg cache_aware kv-events"])
        text += f"\nours cache_aware / best SMG cache_aware ({best}): {figures['cache_vs_smg']:.2f}; "
        text += f"ours kv-events / smg kv-events: {figures['kv_events_vs_smg_kv_events']:.2f}"
        for name, counts in events.items():
            shown = ", ".join(f"{k} {v:.0f}" for k, v in counts.items())
            text += f"\n{name}, SMG's own counters during its runs: {shown}"
        text += (
            f"\nSMG runs with `{args.grpo_smg_args}`; its default cache_aware index (--kv-index positional) is built "
            "from the sim workers' KV events (SubscribeKvEvents; the counters above are SMG's: smg_kv_event_* and "
            "smg_cache_aware_policy_branch_total); `hash` is --cache-index hash --cache-boundaries 256"
        )
    text += "\nours cache_aware kv-events: our router with --kv-events (the workers' events replace its own guess, but for what it sent in the last 5-10 s)"
    return text, figures
