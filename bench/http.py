"""`mimo-serve bench http`: our router's OpenAI HTTP front against SMG's, `/v1/chat/completions` on both, over the
same sim workers, in one run with alternating rounds.

1. Added latency: streamed TTFT from one client process through each router, minus TTFT of the same prompt ids sent
   directly to the worker (SglangScheduler gRPC); medians over rounds of the per-round p50 and p99.
2. Throughput: unary chat requests/s with instant sim workers (time scale 0), each router pinned to one core; the
   router's own CPU seconds per request give requests/s per router core.

Both fronts do the same work per request: parse the OpenAI body, render MiMo's chat template, tokenize, route over
gRPC, detokenize, answer in OpenAI JSON / SSE. The last line printed is the headline: p50 and p99 ratios ours/SMG.
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

import aiohttp

from bench.clients import DirectClient
from bench.common import PROFILES, REPO, Procs, cpus, median, pct, ratio, say, table
from services.common.net import free_port
from services.text.artifacts import load_tokenizer_dir
from services.text.chat import ChatTemplate, Message

Chat = list[dict[str, str]]


class ChatClient:
    """POST /v1/chat/completions, streamed (TTFT: the first chunk with content) or not."""

    transport = "HTTP/1.1 POST /v1/chat/completions (SSE)"

    def __init__(self, base_url: str, name: str, model: str = "mimo") -> None:
        self.name, self._url, self._model = name, base_url + "/v1/chat/completions", model
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512), timeout=aiohttp.ClientTimeout(total=None)
        )

    def _body(self, messages: Chat, max_new: int, stream: bool) -> dict[str, object]:
        return {
            "model": self._model, "messages": messages, "max_tokens": max_new, "temperature": 0,
            "ignore_eos": True, "stream": stream,
        }  # fmt: skip

    async def ttft(self, messages: Chat, max_new: int) -> float:
        t0, first = time.perf_counter(), 0.0
        async with self._session.post(self._url, json=self._body(messages, max_new, True)) as r:
            if r.status != 200:
                raise RuntimeError(f"{self.name}: HTTP {r.status}: {(await r.text())[:300]}")
            async for line in r.content:
                if not first and line.startswith(b"data: {") and b'"content":"' in line and b'"role"' not in line:
                    first = time.perf_counter() - t0
        if not first:
            raise RuntimeError(f"{self.name}: a stream without content")
        return first

    async def call(self, messages: Chat, max_new: int) -> None:
        async with self._session.post(self._url, json=self._body(messages, max_new, False)) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"{self.name}: HTTP {r.status}")

    async def close(self) -> None:
        await self._session.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mimo-serve bench http", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny settings (the smoke test): seconds, not minutes")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds per part (medians over rounds)")
    p.add_argument("--skip-smg", action="store_true", help="measure ours only (and direct)")
    p.add_argument("--parts", default="latency,throughput", help="comma list of latency,throughput")
    p.add_argument("--model", type=Path, default=REPO / "models" / "tiny-mimo", help="tokenizer + chat template")
    p.add_argument("--log-dir", type=Path, help="where child logs go (default: a temporary dir)")
    p.add_argument("--requests", type=int, default=300, help="latency: requests per path per round")
    p.add_argument("--concurrency", type=int, default=2, help="latency: concurrent streams")
    p.add_argument("--time-scale", type=float, default=1.0, help="latency: sim worker time scale")
    p.add_argument("--duration-s", type=float, default=5.0, help="throughput: seconds per router per round")
    p.add_argument("--tput-concurrency", type=int, default=64, help="throughput: closed-loop requests in flight")
    p.add_argument("--workers", type=int, default=2, help="throughput: instant sim workers")
    return p


def conversations(template: ChatTemplate, tokenizer, count: int, words: int, seed: int) -> list[tuple[Chat, list[int]]]:  # type: ignore[no-untyped-def]
    """`count` distinct user messages and the prompt ids the worker sees for each (MiMo's chat template)."""
    rng = random.Random(seed)
    vocab = [w for w in tokenizer.get_vocab() if w.isalpha()][:2000]
    out = []
    for _ in range(count):
        text = " ".join(rng.choice(vocab) for _ in range(words))
        prompt = template.render([Message("user", text)], add_generation_prompt=True)
        out.append(([{"role": "user", "content": text}], tokenizer.encode(prompt, add_special_tokens=False).ids))
    return out


async def _lanes(fn, items: Sequence, concurrency: int) -> list[float]:  # type: ignore[no-untyped-def]
    todo, out = iter(items), []

    async def lane() -> None:
        for item in todo:
            out.append(await fn(item))

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return out


async def latency(args: argparse.Namespace, procs: Procs, convs: list[tuple[Chat, list[int]]]) -> tuple[str, dict]:
    (worker,) = await procs.workers(1, PROFILES / "tiny-cpu.json", args.time_scale)
    tok = await procs.tokenizer()
    http_port = free_port()
    await procs.router([worker], tok, "round_robin", http_port=http_port)
    direct = DirectClient(worker.target)
    clients: dict[str, ChatClient | DirectClient] = {"direct": direct}
    clients["ours"] = ChatClient(f"http://127.0.0.1:{http_port}", "ours")
    if not args.skip_smg:
        smg = await procs.smg([worker], "round_robin")
        from bench.clients import SmgClient

        clients["smg"] = ChatClient(smg.target, "smg", await SmgClient.model_name(smg.target))

    async def one(name: str, conv: tuple[Chat, list[int]]) -> float:
        c = clients[name]
        return await (c.ttft(conv[1], 4) if isinstance(c, DirectClient) else c.ttft(conv[0], 4))

    p50: dict[str, list[float]] = {k: [] for k in clients}
    p99: dict[str, list[float]] = {k: [] for k in clients}
    names = list(clients)
    batch = (convs * 100)[: args.requests]
    try:
        for name in names:  # warm-up: connections, the worker's prefix cache for these prompts
            await _lanes(lambda c, n=name: one(n, c), convs, args.concurrency)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                ts = await _lanes(lambda c, n=name: one(n, c), batch, args.concurrency)
                p50[name].append(pct(ts, 50))
                p99[name].append(pct(ts, 99))
            say(
                f"latency round {r + 1}/{args.rounds}: "
                + ", ".join(f"{k} p50 {v[-1] * 1e3:.2f} ms" for k, v in p50.items())
            )
    finally:
        for c in clients.values():
            await c.close()
        procs.stop()
    added = {
        n: (median([a - d for a, d in zip(p50[n], p50["direct"], strict=True)]),
            median([a - d for a, d in zip(p99[n], p99["direct"], strict=True)]))
        for n in names
    }  # fmt: skip
    rows = [
        [n, f"{median(p50[n]) * 1e3:.2f}", f"{median(p99[n]) * 1e3:.2f}"]
        + (["-", "-"] if n == "direct" else [f"{added[n][0] * 1e3:.3f}", f"{added[n][1] * 1e3:.3f}"])
        for n in names
    ]
    text = (
        f"1. Added TTFT over direct-to-worker (1 sim worker, tiny-cpu profile, time scale {args.time_scale}; "
        f"{args.concurrency} concurrent streams, {len(convs)} distinct chats of ~{len(convs[0][1])} prompt tokens, "
        f"4 new tokens; {args.requests} requests per path per round, {args.rounds} alternating rounds, medians)\n"
        + table(["path", "TTFT p50 ms", "TTFT p99 ms", "added p50 ms", "added p99 ms"], rows)
    )
    figures = {"ours_p50": added["ours"][0], "ours_p99": added["ours"][1]}
    if "smg" in added:
        figures |= {"smg_p50": added["smg"][0], "smg_p99": added["smg"][1]}
    return text, figures


async def throughput(args: argparse.Namespace, procs: Procs, convs: list[tuple[Chat, list[int]]]) -> tuple[str, dict]:
    cores = cpus()
    router_cpu, rest_cpu = (cores[1], cores[0]) if len(cores) > 1 else (None, None)
    saved = os.sched_getaffinity(0)
    if rest_cpu is not None:
        os.sched_setaffinity(0, {rest_cpu})
    workers = await procs.workers(args.workers, PROFILES / "tiny-cpu.json", 0.0, cpu=rest_cpu)
    tok = await procs.tokenizer(cpu=rest_cpu)
    http_port = free_port()
    routers = {"ours": await procs.router(workers, tok, "round_robin", cpu=router_cpu, http_port=http_port)}
    clients = {"ours": ChatClient(f"http://127.0.0.1:{http_port}", "ours")}
    if not args.skip_smg:
        from bench.clients import SmgClient

        routers["smg"] = await procs.smg(workers, "round_robin", cpu=router_cpu)
        clients["smg"] = ChatClient(routers["smg"].target, "smg", await SmgClient.model_name(routers["smg"].target))
    rps: dict[str, list[float]] = {k: [] for k in clients}
    ms: dict[str, list[float]] = {k: [] for k in clients}
    errors = dict.fromkeys(clients, 0)

    async def saturate(name: str, duration_s: float) -> tuple[int, float]:
        stop_at, done = time.perf_counter() + duration_s, 0

        async def lane(i: int) -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                try:
                    await clients[name].call(convs[i % len(convs)][0], 4)
                    done += 1
                except Exception:  # counted, and shown in the table
                    errors[name] += 1
                    await asyncio.sleep(0.01)
                i += args.tput_concurrency

        t0 = time.perf_counter()
        await asyncio.gather(*(lane(i) for i in range(args.tput_concurrency)))
        return done, time.perf_counter() - t0

    names = list(clients)
    try:
        for name in names:
            await saturate(name, min(1.0, args.duration_s))
        errors = dict.fromkeys(clients, 0)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                cpu0 = routers[name].cpu_s()
                done, wall = await saturate(name, args.duration_s)
                rps[name].append(done / wall)
                ms[name].append((routers[name].cpu_s() - cpu0) / max(1, done) * 1e3)
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
        [n, f"{median(rps[n]):.0f}", f"{median(ms[n]):.3f}", f"{1000 / median(ms[n]):.0f}", errors[n]] for n in names
    ]
    where = f"router on cpu {router_cpu}, the rest on cpu {rest_cpu}" if router_cpu is not None else "nothing pinned"
    text = (
        f"2. Unary chat throughput ({args.tput_concurrency} in flight, 4 new tokens, {args.workers} instant sim "
        f"workers, {args.duration_s:g} s per router per round, {args.rounds} rounds, medians; {where})\n"
        + table(["router", "requests/s", "router cpu ms/request", "req/s per router core", "errors"], rows)
    )
    return text, {"ours_rps": median(rps["ours"]), "ours_cpu_ms": median(ms["ours"])} | (
        {"smg_rps": median(rps["smg"]), "smg_cpu_ms": median(ms["smg"])} if "smg" in rps else {}
    )


async def run(args: argparse.Namespace, log_dir: Path) -> int:
    loaded = load_tokenizer_dir(args.model)
    template = ChatTemplate(loaded.chat_template, loaded.template_tokens)
    convs = conversations(template, loaded.tokenizer, 64, 40, seed=1)
    figures: dict[str, float] = {}
    for part, fn in (("latency", latency), ("throughput", throughput)):
        if part in args.parts.split(","):
            text, got = await fn(args, Procs(log_dir / part, args.model), convs)
            figures |= got
            print(text + "\n", flush=True)
    if "ours_p50" in figures and "smg_p50" in figures:
        parts = []
        for q, target in (("p50", 1.2), ("p99", 1.5)):
            ours, smg = figures[f"ours_{q}"] * 1e3, figures[f"smg_{q}"] * 1e3
            # SMG's added TTFT can be below zero: the direct floor is a Python grpc.aio client, slower than aiohttp
            vs = f"{ratio(ours, smg):.2f}x" if smg > 0.01 else f"n/a (smg {smg:+.2f} ms: below the floor's noise)"
            parts.append(f"{q} ours {ours:.2f} ms vs smg {smg:.2f} ms -> {vs} (target <= {target})")
        print("http added TTFT: " + "; ".join(parts))
    return 0


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if args.quick:
        args.rounds, args.requests, args.duration_s, args.tput_concurrency = 2, 20, 0.5, 8
    if not args.skip_smg and not Path(sys.executable).with_name("smg").exists():
        print("mimo-serve bench http: smg is not installed in this environment; use --skip-smg", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mimo-bench-http-") as tmp, contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(args, args.log_dir or Path(tmp) / "logs"))
    return 130
