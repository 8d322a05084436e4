"""`python -m loadtest sweep`: open-loop runs at a series of rates, or a bisection for the highest sustainable one.

Per rate: throughput, goodput (requests meeting every SLO bound), TTFT / ITL / TPOT / end-to-end p50/p90/p99,
error rate and the workers' own metrics; then PNG plots, one HTML page and a JSON of the figures. The last line
names the sustainable rate. Exit 0 when one was found, 1 when none, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest import mixes, report
from loadtest.arrivals import arrival_times
from loadtest.goodput import RateResult, SloSpec, summarise
from loadtest.openloop import Transport, run_open_loop, transport_for
from loadtest.worker_metrics import WorkerWatch

EXIT_OK, EXIT_NONE, EXIT_USAGE = 0, 1, 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest sweep", description=__doc__.splitlines()[0])
    p.add_argument("--target", default="127.0.0.1:50051", help="router HOST:PORT (gRPC) or http://HOST:PORT (OpenAI)")
    p.add_argument("--mix", default="mimo-math", help=f"{', '.join(mixes.MIXES)}, or a .jsonl file of requests")
    p.add_argument("--rates", default="", help="comma-separated requests/s to run, e.g. 1,2,4,8")
    p.add_argument("--find", action="store_true", help="bisect between --min-rate and --max-rate instead")
    p.add_argument("--min-rate", type=float, default=0.5)
    p.add_argument("--max-rate", type=float, default=32.0)
    p.add_argument("--bisect-steps", type=int, default=5, help="rates tried between the bounds")
    p.add_argument("--duration-s", type=float, default=30.0, help="send window of each rate")
    p.add_argument("--arrivals", choices=("poisson", "constant"), default="poisson")
    p.add_argument("--seed", type=int, default=0, help="arrivals and synthetic mixes")
    p.add_argument("--timeout-s", type=float, default=120.0, help="deadline of each request")
    p.add_argument("--slo-ttft-ms", type=float, default=None, help="a good request's time to first token, at most")
    p.add_argument("--slo-tpot-ms", type=float, default=None, help="a good request's time per output token, at most")
    p.add_argument("--slo-e2e-ms", type=float, default=None, help="a good request's end-to-end latency, at most")
    p.add_argument("--min-good", type=float, default=0.9, help="sustainable: this fraction of requests good")
    p.add_argument("--max-error-rate", type=float, default=0.01, help="sustainable: this fraction failed, at most")
    p.add_argument("--worker-metrics", action="append", default=[], metavar="URL", help="a worker's /metrics")
    p.add_argument("--out", type=Path, default=Path("loadtest-report"), help="directory for JSON, PNGs and HTML")
    return p


@dataclass(frozen=True, slots=True)
class SweepPlan:
    rates: tuple[float, ...]
    is_bisect: bool
    slo: SloSpec


def plan_from_args(args: argparse.Namespace) -> SweepPlan:
    """Raises ValueError naming the flag when one is wrong."""
    if args.find == bool(args.rates):
        raise ValueError("give --rates R1,R2,... or --find (not both)")
    try:
        rates = tuple(float(r) for r in args.rates.split(",") if r.strip()) if args.rates else ()
    except ValueError:
        raise ValueError(f"--rates: not a list of numbers: {args.rates!r}") from None
    if any(not r > 0 for r in rates):
        raise ValueError(f"--rates: every rate must be positive, got {args.rates!r}")
    if args.find and not 0 < args.min_rate < args.max_rate:
        raise ValueError(f"--min-rate must be positive and below --max-rate ({args.min_rate}, {args.max_rate})")
    if args.bisect_steps < 1 or not args.duration_s > 0 or not 0 < args.min_good <= 1:
        raise ValueError("--bisect-steps >= 1, --duration-s > 0 and 0 < --min-good <= 1 are required")
    if not 0 <= args.max_error_rate <= 1:
        raise ValueError(f"--max-error-rate must be between 0 and 1, got {args.max_error_rate}")
    slo = SloSpec(args.slo_ttft_ms, args.slo_tpot_ms, args.slo_e2e_ms)
    return SweepPlan(tuple(sorted(rates)), args.find, slo)


@dataclass(slots=True)
class Source:
    """Requests for each rate, never repeating a prompt within a sweep (a repeat would hit the prefix cache)."""

    mix: str
    seed: int
    context_tokens: int
    rows: Sequence[mixes.RequestSpec] = ()
    num_used: int = 0

    def take(self, num: int) -> list[mixes.RequestSpec]:
        start, self.num_used = self.num_used, self.num_used + num
        if self.rows:  # a JSONL file: its rows in turn, from where the last rate stopped
            return [self.rows[(start + i) % len(self.rows)] for i in range(num)]
        return mixes.synthetic(self.mix, num, self.seed * 1_000_003 + start, self.context_tokens)


async def run_rate(
    transport: Transport, source: Source, rate: float, args: argparse.Namespace, slo: SloSpec
) -> RateResult:
    due = arrival_times(rate, args.duration_s, args.arrivals, args.seed)
    specs = source.take(len(due))
    watch = WorkerWatch(args.worker_metrics)
    await watch.start()
    outcomes = await run_open_loop(transport, specs, due, args.timeout_s)
    workers = await watch.stop()
    result = summarise(rate, args.duration_s, outcomes, slo, args.min_good, args.max_error_rate, workers)
    print(_line(result), flush=True)
    return result


def _line(r: RateResult) -> str:
    verdict = "ok    " if r.is_sustainable else "BROKEN"
    return (
        f"rate {r.offered_rps:8.3f}/s {verdict} throughput {r.throughput_rps:7.3f}/s goodput {r.goodput_rps:7.3f}/s "
        f"({r.num_good}/{r.num_requests} good, {r.num_errors} errors) ttft p90 {r.ttft_ms['p90']:.0f} ms "
        f"itl p90 {r.itl_ms['p90']:.1f} ms e2e p90 {r.e2e_ms['p90']:.0f} ms"
    )


async def sweep(plan: SweepPlan, args: argparse.Namespace) -> list[RateResult]:
    transport = transport_for(args.target)
    try:
        context = await transport.max_context_tokens()
        source = Source(args.mix, args.seed, context)
        if args.mix.endswith(".jsonl"):
            source.rows = mixes.from_jsonl(Path(args.mix), context, args.seed)
        else:
            source.take(0 if args.mix in mixes.MIXES else 1)  # an unknown mix fails here, before any rate
        if not plan.is_bisect:
            return [await run_rate(transport, source, r, args, plan.slo) for r in plan.rates]
        return await _bisect(transport, source, args, plan.slo)
    finally:
        await transport.close()


async def _bisect(transport: Transport, source: Source, args: argparse.Namespace, slo: SloSpec) -> list[RateResult]:
    """The highest rate that holds: the bounds first, then `--bisect-steps` midpoints (geometric)."""
    results = [await run_rate(transport, source, args.min_rate, args, slo)]
    if not results[0].is_sustainable:
        return results
    results.append(await run_rate(transport, source, args.max_rate, args, slo))
    low, high = args.min_rate, args.max_rate
    if results[-1].is_sustainable:
        return results
    for _ in range(args.bisect_steps):
        mid = (low * high) ** 0.5
        result = await run_rate(transport, source, mid, args, slo)
        results.append(result)
        low, high = (mid, high) if result.is_sustainable else (low, mid)
    return sorted(results, key=lambda r: r.offered_rps)


def sustainable(results: Sequence[RateResult]) -> RateResult | None:
    """The highest rate that held the SLO."""
    return max((r for r in results if r.is_sustainable), key=lambda r: r.offered_rps, default=None)


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    try:
        plan = plan_from_args(args)
        results = asyncio.run(sweep(plan, args))
    except ValueError as e:
        print(f"python -m loadtest sweep: {e}", file=sys.stderr)
        return EXIT_USAGE
    best = sustainable(results)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    paths = report.write(args.out, results, best, settings)
    print(f"report: {paths.html} ({paths.json.name}, {len(paths.pngs)} plots)")
    if best is None:
        print(f"sweep: no sustainable rate (lowest tried {results[0].offered_rps:g}/s broke the SLO)")
        return EXIT_NONE
    print(
        f"sweep: sustainable rate {best.offered_rps:.3f} req/s (goodput {best.goodput_rps:.3f}/s, "
        f"{best.output_tps:.0f} output tok/s, ttft p90 {best.ttft_ms['p90']:.0f} ms)"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
