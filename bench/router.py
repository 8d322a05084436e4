"""`mimo-serve bench router`: our router against SMG on the same sim workers, measured side by side in one run.

1. Added latency: time to first token from one client process directly against one sim worker, through our
   router and through SMG, in alternating rounds; the figure is the median over rounds of (via - direct) at p50
   and p99. Our client speaks gRPC to our router; SMG's is HTTP `/generate` with `input_ids` (SMG's client API).
2. Saturated throughput: unary requests/s with instant sim workers (time scale 0), the router (ours or SMG)
   pinned to one core with taskset and the load generator, workers and tokenizer on the other core.
3. Cache-aware routing on a GRPO-shaped workload (see `bench_grpo.py`).

The last line printed is the headline: the p50 added latency, ours against SMG.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer

from bench import grpo as bench_grpo
from bench.clients import Client, DirectClient, OursClient, SmgClient
from bench.common import PROFILES, Procs, cpus, median, model_dir, pct, ratio, say, table


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mimo-serve bench router", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny settings (the smoke test): seconds, not minutes")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds per part (medians over rounds)")
    p.add_argument("--skip-smg", action="store_true", help="measure ours only (and direct)")
    p.add_argument("--parts", default="latency,throughput,cache", help="comma list of latency,throughput,cache")
    p.add_argument("--model", help="model dir with tokenizer files (default: models/tiny-mimo or a synthetic one)")
    p.add_argument("--log-dir", type=Path, help="where child logs go (default: a temporary dir)")
    g = p.add_argument_group("1. added latency")
    g.add_argument("--latency-requests", type=int, default=300, help="requests per path per round")
    g.add_argument("--latency-concurrency", type=int, default=2, help="concurrent streams")
    g.add_argument("--latency-time-scale", type=float, default=1.0, help="sim worker time scale")
    g.add_argument("--latency-policy", default="round_robin", help="policy of both routers (one worker behind them)")
    g = p.add_argument_group("2. saturated throughput")
    g.add_argument("--duration-s", type=float, default=5.0, help="measured seconds per router per round")
    g.add_argument("--concurrency", type=int, default=64, help="closed-loop requests in flight")
    g.add_argument("--workers", type=int, default=2, help="instant sim workers behind the router")
    g.add_argument("--tput-policy", default="round_robin", help="policy of both routers")
    bench_grpo.add_args(p)
    return p


def _quick(args: argparse.Namespace) -> None:
    args.rounds = min(args.rounds, 2)
    args.latency_requests = min(args.latency_requests, 20)
    args.duration_s = min(args.duration_s, 0.5)
    args.concurrency = min(args.concurrency, 8)
    bench_grpo.quick(args)


def prompts(vocab: int, count: int, length: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(10, vocab) for _ in range(length)] for _ in range(count)]


def vocab_size(model: Path) -> int:
    return Tokenizer.from_file(str(model / "tokenizer.json")).get_vocab_size(with_added_tokens=False)


def _vs(ours: float, smg: float) -> str:
    """ours/smg, or n/a when SMG's added latency is within noise of zero (the ratio would mean nothing)."""
    return f"{ours / smg:.2f}" if smg > 1e-5 else "n/a"


# ---- 1. added latency ------------------------------------------------------------------------------------------
async def _ttfts(client: Client, batch: list[list[int]], concurrency: int, max_new: int) -> list[float]:
    todo = iter(batch)
    out: list[float] = []

    async def lane() -> None:
        for ids in todo:
            out.append(await client.ttft(ids, max_new))

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return out


async def latency(args: argparse.Namespace, procs: Procs, vocab: int) -> tuple[str, dict[str, float]]:
    profile = PROFILES / "tiny-cpu.json"
    (worker,) = await procs.workers(1, profile, args.latency_time_scale)
    tok = await procs.tokenizer()
    clients: list[Client] = [
        DirectClient(worker.target),
        DirectClient((await procs.passthrough(worker)).target, "py-passthrough"),
        OursClient((await procs.router([worker], tok, args.latency_policy)).target),
    ]
    if not args.skip_smg:
        smg = await procs.smg([worker], args.latency_policy)
        clients.append(SmgClient(smg.target, await SmgClient.model_name(smg.target)))
    batch = prompts(vocab, 64, 128, seed=1)
    p50: dict[str, list[float]] = {c.name: [] for c in clients}
    p99: dict[str, list[float]] = {c.name: [] for c in clients}
    try:
        for c in clients:  # warm-up: connections, the worker's prefix cache for these prompts
            await _ttfts(c, batch, args.latency_concurrency, 4)
        for r in range(args.rounds):
            for c in clients[r % len(clients) :] + clients[: r % len(clients)]:
                ts = await _ttfts(c, (batch * 100)[: args.latency_requests], args.latency_concurrency, 4)
                p50[c.name].append(pct(ts, 50))
                p99[c.name].append(pct(ts, 99))
            say(
                f"latency round {r + 1}/{args.rounds}: "
                + ", ".join(f"{k} p50 {v[-1] * 1e3:.2f} ms" for k, v in p50.items())
            )
    finally:
        for c in clients:
            await c.close()
        procs.stop()
    added = {
        name: (
            median([a - d for a, d in zip(p50[name], p50["direct"], strict=True)]),
            median([a - d for a, d in zip(p99[name], p99["direct"], strict=True)]),
        )
        for name in p50
    }
    rows = []
    for c in clients:
        a50, a99 = added[c.name]
        vs = f"{_vs(a50, added['smg'][0])} / {_vs(a99, added['smg'][1])}" if "smg" in added and c.name != "smg" else ""
        rows.append(
            [c.name, c.transport, f"{median(p50[c.name]) * 1e3:.2f}", f"{median(p99[c.name]) * 1e3:.2f}"]
            + (["-", "-", ""] if c.name == "direct" else [f"{a50 * 1e3:.3f}", f"{a99 * 1e3:.3f}", vs])
        )
    text = (
        f"1. Added latency over direct-to-worker (TTFT; 1 sim worker, tiny-cpu profile, time scale "
        f"{args.latency_time_scale}; {args.latency_concurrency} concurrent streams, 128-token prompts, 4 new tokens; "
        f"{args.latency_requests} requests per path per round, {args.rounds} alternating rounds, medians; "
        f"policy {args.latency_policy})\n"
        + table(
            [
                "path",
                "client transport",
                "TTFT p50 ms",
                "TTFT p99 ms",
                "added p50 ms",
                "added p99 ms",
                "vs smg p50 / p99",
            ],
            rows,
        )
        + "\nnotes: the SMG path is HTTP/1.1 + SSE from the client (SMG's client API), ours is gRPC; both speak gRPC "
        "to the worker. py-passthrough is a 10-line Python grpc.aio proxy that only forwards Generate: the floor of "
        "any router written on Python grpc.aio."
    )
    figures = {"ours_p50": added["ours"][0], "ours_p99": added["ours"][1]}
    if "smg" in added:
        figures |= {"smg_p50": added["smg"][0], "smg_p99": added["smg"][1]}
    return text, figures


# ---- 2. saturated throughput -----------------------------------------------------------------------------------
async def _saturate(
    client: Client, batch: list[list[int]], concurrency: int, duration_s: float
) -> tuple[int, int, float]:
    stop_at = time.perf_counter() + duration_s
    done = errors = 0

    async def lane(i: int) -> None:
        nonlocal done, errors
        while time.perf_counter() < stop_at:
            try:
                await client.call(batch[i % len(batch)], 4, timeout_s=30)
                done += 1
            except Exception:  # counted, and shown in the table
                errors += 1
                await asyncio.sleep(0.01)
            i += concurrency

    t0 = time.perf_counter()
    await asyncio.gather(*(lane(i) for i in range(concurrency)))
    return done, errors, time.perf_counter() - t0


async def throughput(args: argparse.Namespace, procs: Procs, vocab: int) -> tuple[str, dict[str, float]]:
    cores = cpus()
    pinned = len(cores) > 1
    router_cpu, rest_cpu = (cores[1], cores[0]) if pinned else (None, None)
    saved = os.sched_getaffinity(0)
    if rest_cpu is not None:
        os.sched_setaffinity(0, {rest_cpu})
    workers = await procs.workers(args.workers, PROFILES / "tiny-cpu.json", 0.0, cpu=rest_cpu)
    tok = await procs.tokenizer(cpu=rest_cpu)
    routers = {"ours": await procs.router(workers, tok, args.tput_policy, cpu=router_cpu)}
    clients: dict[str, Client] = {"ours": OursClient(routers["ours"].target)}
    if not args.skip_smg:
        routers["smg"] = await procs.smg(workers, args.tput_policy, cpu=router_cpu)
        clients["smg"] = SmgClient(routers["smg"].target, await SmgClient.model_name(routers["smg"].target))
    routers["py-passthrough"] = await procs.passthrough(workers[0], cpu=router_cpu)
    clients["py-passthrough"] = DirectClient(routers["py-passthrough"].target, "py-passthrough")
    batch = prompts(vocab, 256, 64, seed=2)
    rps: dict[str, list[float]] = {k: [] for k in clients}
    util: dict[str, list[float]] = {k: [] for k in clients}
    ms_per_req: dict[str, list[float]] = {k: [] for k in clients}
    errors = dict.fromkeys(clients, 0)
    names = list(clients)
    try:
        for name in names:
            await _saturate(clients[name], batch, args.concurrency, min(1.0, args.duration_s))
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                cpu0 = routers[name].cpu_s()
                done, errs, wall = await _saturate(clients[name], batch, args.concurrency, args.duration_s)
                used = routers[name].cpu_s() - cpu0
                rps[name].append(done / wall)
                util[name].append(used / wall)
                ms_per_req[name].append(used / max(1, done) * 1e3)
                errors[name] += errs
            say(
                f"throughput round {r + 1}/{args.rounds}: "
                + ", ".join(f"{k} {v[-1]:.0f} req/s" for k, v in rps.items())
            )
    finally:
        for c in clients.values():
            await c.close()
        procs.stop()
        os.sched_setaffinity(0, saved)
    rows = [
        [
            name,
            f"{median(rps[name]):.0f}",
            f"{median(util[name]) * 100:.0f}%",
            f"{median(ms_per_req[name]):.3f}",
            f"{1000 / median(ms_per_req[name]):.0f}",
            errors[name],
        ]
        for name in names
    ]
    where = (
        f"router pinned to cpu {router_cpu}; load generator, {args.workers} instant sim workers and tokenizer on cpu {rest_cpu}"
        if pinned
        else "only one cpu available: nothing pinned"
    )
    text = (
        f"2. Saturated throughput (unary requests, 64-token prompts, 4 new tokens, {args.concurrency} in flight, "
        f"{args.duration_s:g} s per router per round, {args.rounds} alternating rounds, medians; policy "
        f"{args.tput_policy}; {where})\n"
        + table(
            ["router", "requests/s", "router cpu busy", "router cpu ms/request", "req/s per core (est.)", "errors"],
            rows,
        )
        + "\npy-passthrough: the 10-line Python grpc.aio proxy (one worker behind it), for the floor of Python gRPC."
    )
    figures = {"ours_rps": median(rps["ours"]), "ours_cpu_ms": median(ms_per_req["ours"])}
    if "smg" in rps:
        figures |= {"smg_rps": median(rps["smg"]), "smg_cpu_ms": median(ms_per_req["smg"])}
        text += (
            f"\nours/smg requests/s: {ratio(figures['ours_rps'], figures['smg_rps']):.2f}; "
            f"per-core capacity ours/smg (1000 / cpu ms per request): "
            f"{ratio(figures['smg_cpu_ms'], figures['ours_cpu_ms']):.2f} "
            "(a router below ~100% busy was held back by the load generator's core, not its own)"
        )
    return text, figures


async def run(args: argparse.Namespace, model: Path, log_dir: Path) -> int:
    vocab = vocab_size(model)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    sections: list[str] = []
    figures: dict[str, float] = {}
    for part, fn in (("latency", latency), ("throughput", throughput), ("cache", bench_grpo.cache_part)):
        if part not in parts:
            continue
        procs = Procs(log_dir / part, model)
        try:
            text, got = await fn(args, procs, vocab)
        finally:
            procs.stop()
        sections.append(text)
        figures |= got
        print(text + "\n", flush=True)
    if "ours_p50" not in figures:
        print("router bench: no latency part run, no headline", flush=True)
        return 0
    ours = figures["ours_p50"] * 1e3
    if "smg_p50" in figures:
        smg = figures["smg_p50"] * 1e3
        print(f"router overhead p50: ours {ours:.2f} ms vs smg {smg:.2f} ms -> ratio {ratio(ours, smg):.2f}")
    else:
        print(f"router overhead p50: ours {ours:.2f} ms over direct (smg skipped)")
    return 0


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if args.quick:
        _quick(args)
    if not args.skip_smg and not Path(sys.executable).with_name("smg").exists():
        print("mimo-serve bench router: smg is not installed in this environment; use --skip-smg", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mimo-bench-router-") as tmp:
        model = model_dir(args.model, Path(tmp))
        log_dir = args.log_dir or Path(tmp) / "logs"
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(run(args, model, log_dir))
    return 130
