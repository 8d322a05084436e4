"""`mimo-serve bench verifier`: the verifier against its peers, measured side by side in alternating rounds.

Math: verdicts/s over the labelled set through the service (gRPC, loopback) and through its in-process
pool, against plain math-verify with the same settings, one call per pair on a ProcessPoolExecutor of
the same number of processes; verdicts must be identical. Code: stdin/stdout tests/s through the
service's sandboxes (one bubblewrap sandbox per task, a fresh process per test) against one fresh
bubblewrap sandbox per test (setpriv + prlimit + the same bwrap flags), at the same concurrency.
Rates are medians over rounds; ratios are medians of the per-round ratios (each round compares
neighbours run under the same load). The headline (both ratios) is the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import grpc
from mimo_client.v1 import verifier_pb2 as pb
from mimo_client.v1 import verifier_pb2_grpc as pb_grpc

from services.common.config import ServerSettings
from services.common.server import start
from services.verifier.code import compare_stdout
from services.verifier.domain import CodeTask, CodeTest, RewardMode, Task
from services.verifier.math_check import plain_correct
from services.verifier.pool import PoolSettings
from services.verifier.sandbox import Limits, SandboxConfig
from services.verifier.server import make_service
from services.verifier.verifier import Verifier, VerifierSettings

DATA = Path(__file__).resolve().parents[1] / "tests" / "verifier" / "data" / "math_pairs.jsonl"
SOLUTIONS = {
    "sum": "import sys\nprint(sum(map(int, sys.stdin.read().split())))",
    "max": "import sys\nxs = list(map(int, sys.stdin.read().split()))\nprint(max(xs))",
    "wrong": "import sys\nxs = list(map(int, sys.stdin.read().split()))\nprint(min(xs))",
}


def _median_rate(count: int, times: Sequence[float]) -> float:
    return statistics.median(count / t for t in times)


def _median_ratio(base_times: Sequence[float], times: Sequence[float]) -> float:
    """Median over rounds of (our rate / the peer's rate in the same round): robust to load drifting."""
    return statistics.median(b / t for b, t in zip(base_times, times, strict=True))


def _cpu_s(pids: Sequence[int]) -> float:
    """User + system CPU seconds of this process and `pids` (load-independent cost)."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK") + time.process_time()


# ---- math -------------------------------------------------------------------------------------


def _plain_round(ex: ProcessPoolExecutor, rows: list[dict]) -> tuple[float, list[bool]]:
    start = time.perf_counter()
    futures = [ex.submit(plain_correct, r["response"], r["references"]) for r in rows]
    verdicts = [f.result() for f in futures]
    return time.perf_counter() - start, verdicts


async def _pool_round(verifier: Verifier, rows: list[dict]) -> tuple[float, list[bool]]:
    await verifier.math_pool.clear_caches()
    start = time.perf_counter()
    outcomes = await asyncio.gather(*(verifier.math_pool.check(r["response"], tuple(r["references"])) for r in rows))
    return time.perf_counter() - start, [o.correct for o in outcomes]


async def _grpc_round(
    stub: pb_grpc.VerifierStub, verifier: Verifier, rows: list[dict], batch: int
) -> tuple[float, list[bool]]:
    await verifier.math_pool.clear_caches()
    tasks = [
        pb.VerifyTask(task_id=str(i), response=r["response"], math=pb.MathTask(references=r["references"]))
        for i, r in enumerate(rows)
    ]
    start = time.perf_counter()
    calls = [
        stub.Verify(pb.VerifyRequest(tasks=tasks[i : i + batch]), timeout=600) for i in range(0, len(tasks), batch)
    ]
    responses = await asyncio.gather(*calls)
    elapsed = time.perf_counter() - start
    return elapsed, [res.reward == 1.0 for resp in responses for res in resp.results]


async def bench_math(args: argparse.Namespace) -> tuple[float, float, float]:
    rows = [json.loads(line) for line in Path(args.math_data).read_text().splitlines()]
    settings = VerifierSettings(math=PoolSettings(num_processes=args.processes))
    verifier = Verifier(settings)
    verifier.start()
    running = await start(ServerSettings(service="verifier", listen="127.0.0.1:0", grace_s=1.0), make_service(verifier))
    times: dict[str, list[float]] = {"service": [], "pool": [], "plain": []}
    cpu: dict[str, list[float]] = {"service": [], "pool": [], "plain": []}
    mismatches = 0
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.VerifierStub(channel)
            with ProcessPoolExecutor(args.processes) as ex:
                await asyncio.to_thread(_plain_round, ex, rows)  # warm-up: imports, ANTLR tables
                await _pool_round(verifier, rows)
                for r in range(args.rounds):
                    order: list[tuple[str, Callable]] = [
                        ("service", lambda: _grpc_round(stub, verifier, rows, args.batch)),
                        ("pool", lambda: _pool_round(verifier, rows)),
                        ("plain", lambda: asyncio.to_thread(_plain_round, ex, rows)),
                    ]
                    if r % 2:
                        order.reverse()
                    verdicts = {}
                    for name, run in order:
                        pids = (
                            list(ex._processes)
                            if name == "plain"
                            else [w.process.pid for w in verifier.math_pool._workers]
                        )
                        cpu_before = _cpu_s(pids)
                        elapsed, verdicts[name] = await run()
                        cpu[name].append(_cpu_s(pids) - cpu_before)
                        times[name].append(elapsed)
                    mismatches += sum(a != b for a, b in zip(verdicts["plain"], verdicts["service"], strict=True))
                    mismatches += sum(a != b for a, b in zip(verdicts["plain"], verdicts["pool"], strict=True))
                    rates = {k: len(rows) / v[-1] for k, v in times.items()}
                    print(f"  math round {r + 1}: " + ", ".join(f"{k} {v:.0f}/s" for k, v in rates.items()))
    finally:
        await running.drain()
    rate = {k: _median_rate(len(rows), v) for k, v in times.items()}
    ratio = {k: _median_ratio(times["plain"], v) for k, v in times.items()}
    cpu_ms = {k: 1e3 * statistics.median(v) / len(rows) for k, v in cpu.items()}
    print(f"math ({len(rows)} labelled pairs, {args.processes} processes, median of {args.rounds} rounds):")
    print(f"  {'':40} {'verdicts/s':>10} {'ratio':>6} {'CPU ms/verdict':>15}")
    labels = {
        "plain": "plain math-verify, one call per pair",
        "pool": "verifier pool (in-process API)",
        "service": f"verifier service (gRPC, {args.batch} tasks/call)",
    }
    for key, label in labels.items():
        print(f"  {label:40} {rate[key]:10.0f} {ratio[key]:6.2f} {cpu_ms[key]:15.2f}")
    print(f"  verdicts differing from plain math-verify: {mismatches}")
    if mismatches:
        raise SystemExit("math verdicts differ from plain math-verify")
    return rate["service"], rate["plain"], ratio["service"]


# ---- code -------------------------------------------------------------------------------------


def _code_workload(num_tasks: int, tests_per_task: int, seed: int = 1) -> list[tuple[str, list[CodeTest]]]:
    rng = random.Random(seed)
    work = []
    for t in range(num_tasks):
        kind = rng.choice(["sum", "max"])
        tests = []
        for _ in range(tests_per_task):
            xs = [rng.randint(-(10**9), 10**9) for _ in range(rng.randint(1, 2000))]
            want = sum(xs) if kind == "sum" else max(xs)
            tests.append(CodeTest(" ".join(map(str, xs)), str(want)))
        source = SOLUTIONS["wrong"] if t % 5 == 4 else SOLUTIONS[kind]
        work.append((source, tests))
    return work


async def _fresh_sandbox_test(verifier: Verifier, code_path: str, test: CodeTest, limits: Limits) -> bool:
    """One test in its own fresh sandbox: setpriv, prlimit, the service's bwrap flags, python3 sol.py."""
    prlimit = [
        "prlimit",
        f"--cpu={limits.cpu_limit_s}:{limits.cpu_limit_s + 1}",
        f"--as={limits.memory_bytes}",
        f"--nproc={limits.num_processes}",
        f"--fsize={limits.file_bytes}",
        f"--nofile={limits.open_files}",
        "--core=0",
        "--",
    ]
    argv = verifier.sandbox.isolate(["/usr/bin/python3", "-I", "/tmp/sol.py"], [(code_path, "/tmp/sol.py")], prlimit)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(limits.wall_limit_s):
            out, _ = await proc.communicate(test.stdin.encode())
    except TimeoutError:
        os.killpg(proc.pid, 9)
        await proc.communicate()
        return False
    return (
        proc.returncode == 0 and len(out) <= limits.output_bytes and compare_stdout(out, test.expected_stdout) is None
    )


async def _ours_round(
    verifier: Verifier, work: list[tuple[str, list[CodeTest]]], concurrency: int
) -> tuple[float, int]:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int, source: str, tests: list[CodeTest]) -> int:
        async with gate:
            task = Task(
                str(i), f"```python\n{source}\n```", CodeTask(tests=tuple(tests), reward_mode=RewardMode.PASS_RATE)
            )
            result = await verifier.score(i, task)
            return sum(t.status == 1 for t in result.tests)

    start = time.perf_counter()
    passed = await asyncio.gather(*(one(i, s, t) for i, (s, t) in enumerate(work)))
    return time.perf_counter() - start, sum(passed)


async def _fresh_round(
    verifier: Verifier, work: list[tuple[str, list[CodeTest]]], concurrency: int, tmp: str
) -> tuple[float, int]:
    gate = asyncio.Semaphore(concurrency)
    paths = []
    for i, (source, _) in enumerate(work):
        path = os.path.join(tmp, f"sol{i}.py")
        Path(path).write_text(source)
        os.chmod(path, 0o644)
        paths.append(path)

    async def one(path: str, test: CodeTest) -> bool:
        async with gate:
            return await _fresh_sandbox_test(verifier, path, test, verifier.settings.limits)

    start = time.perf_counter()
    passed = await asyncio.gather(*(one(paths[i], t) for i, (_, tests) in enumerate(work) for t in tests))
    return time.perf_counter() - start, sum(passed)


async def bench_code(args: argparse.Namespace) -> tuple[float, float, float]:
    work = _code_workload(args.code_tasks, args.tests_per_task)
    num_tests = sum(len(t) for _, t in work)
    verifier = Verifier(
        VerifierSettings(math=PoolSettings(num_processes=1), sandbox=SandboxConfig(), max_sandboxes=args.concurrency)
    )
    times: dict[str, list[float]] = {"ours": [], "fresh": []}
    with tempfile.TemporaryDirectory(prefix="mimo-bench-") as tmp:
        os.chmod(tmp, 0o755)
        await _ours_round(verifier, work[:2], args.concurrency)  # warm-up
        for r in range(args.rounds):
            order = ["ours", "fresh"] if r % 2 == 0 else ["fresh", "ours"]
            passed = {}
            for name in order:
                run = (
                    _ours_round(verifier, work, args.concurrency)
                    if name == "ours"
                    else _fresh_round(verifier, work, args.concurrency, tmp)
                )
                elapsed, passed[name] = await run
                times[name].append(elapsed)
            print(f"  code round {r + 1}: " + ", ".join(f"{k} {num_tests / times[k][-1]:.0f} tests/s" for k in order))
            if passed["ours"] != passed["fresh"]:
                raise SystemExit(f"code verdicts differ: {passed}")
    rate = {k: _median_rate(num_tests, v) for k, v in times.items()}
    ratio = _median_ratio(times["fresh"], times["ours"])
    print(
        f"code ({len(work)} tasks x {args.tests_per_task} stdin/stdout tests, concurrency {args.concurrency}, median of {args.rounds} rounds):"
    )
    print(f"  one fresh bubblewrap sandbox per test  {rate['fresh']:8.0f} tests/s")
    print(f"  verifier (sandbox per task, fork/test) {rate['ours']:8.0f} tests/s  x{ratio:.2f}")
    return rate["ours"], rate["fresh"], ratio


def main(argv: Sequence[str]) -> int:
    cpus = os.cpu_count() or 1
    p = argparse.ArgumentParser(prog="mimo-serve bench verifier", description=__doc__)
    p.add_argument("--processes", type=int, default=cpus, help="math processes, for both sides")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=64, help="math tasks per Verify call")
    p.add_argument("--math-data", default=str(DATA))
    p.add_argument("--code-tasks", type=int, default=20)
    p.add_argument("--tests-per-task", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=2 * cpus, help="sandboxes at once, for both sides")
    p.add_argument("--only", choices=["math", "code"])
    args = p.parse_args(list(argv))
    headline = []
    if args.only in (None, "math"):
        ours, plain, ratio = asyncio.run(bench_math(args))
        headline.append(f"math {ours:.0f} verdicts/s vs plain math-verify {plain:.0f}/s -> ratio {ratio:.2f}")
    if args.only in (None, "code"):
        ours, fresh, ratio = asyncio.run(bench_code(args))
        headline.append(f"code {ours:.0f} tests/s vs fresh sandbox per test {fresh:.0f}/s -> ratio {ratio:.2f}")
    print("verifier: " + "; ".join(headline))
    return 0
