"""`mimo-serve bench autoscaler`: our rule against the Kubernetes HPA defaults on replayed load traces.

Both rules are the operator's own `scaling.decide`, fed the same simulated sim-worker pool, the same
metrics (KV-cache usage and waiting requests) at the same scrape interval; they differ only in how
often they run and in their behaviour (HPA: 15 s sync, 300 s scale-down window). Simulated time, so
a whole run takes seconds. The last line is the headline figure.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.autoscaler_sim import RateFn, RuleSetup, RunResult, WorkerModel, first_decision_after, simulate
from operators.autoscaler.spec import ScalingSpec, parse_scaling

MINUTE_S = 60.0
METRICS = [{"type": "KVCacheUsage", "target": 0.7}, {"type": "WaitingRequests", "target": 2}]
HPA_BEHAVIOR = {  # the HPA's documented defaults
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15},
        ],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 300,
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    },
}


@dataclass(frozen=True, slots=True)
class Trace:
    name: str
    rate_rps: RateFn
    duration_s: float
    steps: tuple[tuple[float, int], ...] = ()  # (time_s, +1 for a rise, -1 for a fall)


def _piecewise(points: Sequence[tuple[float, float]]) -> RateFn:
    """A rate that jumps to `rate` at each `time_s` of (time_s, rate), in order."""

    def rate(now_s: float) -> float:
        current = points[0][1]
        for time_s, value in points:
            if now_s >= time_s:
                current = value
        return current

    return rate


def _diurnal(now_s: float) -> float:
    day_s = 4 * 3600.0  # a compressed day: trough 4 req/s, peak 30 req/s
    return 4.0 + 26.0 * (1 - math.cos(2 * math.pi * now_s / day_s)) / 2


TRACES = (
    Trace("steady", _piecewise([(0, 16.0)]), 40 * MINUTE_S),
    Trace(
        "step",
        _piecewise([(0, 8.0), (10 * MINUTE_S, 24.0), (30 * MINUTE_S, 8.0)]),
        50 * MINUTE_S,
        ((10 * MINUTE_S, 1), (30 * MINUTE_S, -1)),
    ),
    Trace(
        "spike",
        _piecewise([(0, 10.0), (15 * MINUTE_S, 30.0), (16.5 * MINUTE_S, 10.0)]),
        40 * MINUTE_S,
        ((15 * MINUTE_S, 1), (16.5 * MINUTE_S, -1)),
    ),
    Trace("diurnal", _diurnal, 4 * 3600.0),
)


def build_setups(args: argparse.Namespace) -> tuple[RuleSetup, RuleSetup]:
    ours_behavior = {"scaleDown": {"stabilizationWindowSeconds": args.down_window_s}}  # the rest: CRD defaults
    ours = _spec(ours_behavior, args.max_replicas)
    hpa = _spec(HPA_BEHAVIOR, args.max_replicas)
    return (
        RuleSetup("ours", ours, interval_s=args.interval_s, scrape_s=args.scrape_s),
        RuleSetup("hpa", hpa, interval_s=15.0, scrape_s=args.scrape_s),
    )


def _spec(behavior: Mapping[str, object], max_replicas: int) -> ScalingSpec:
    """Parsed from a MiMoPool spec, exactly as the operator would."""
    pool = {"minReplicas": 1, "maxReplicas": max_replicas, "autoscaling": {"metrics": METRICS, "behavior": behavior}}
    return parse_scaling(pool)


@dataclass(frozen=True, slots=True)
class Row:
    trace: str
    rule: str
    ups: tuple[float, ...]  # seconds from each rise to the first scale-up decision
    downs: tuple[float, ...]
    slo_share: float
    replica_hours: float
    requests: float
    within: float


def run_trace(trace: Trace, setup: RuleSetup, args: argparse.Namespace, model: WorkerModel) -> tuple[Row, list[float]]:
    results: list[RunResult] = []
    for round_ in range(args.rounds):  # each round: new arrivals, new scrape and timer phases
        results.append(simulate(setup, trace.rate_rps, trace.duration_s, model=model, slo_s=args.slo_s, seed=round_))
    ups = _delays(results, trace, +1)
    downs = _delays(results, trace, -1)
    requests = sum(r.requests for r in results)
    within = sum(r.within_slo for r in results)
    row = Row(
        trace.name,
        setup.name,
        tuple(ups),
        tuple(downs),
        within / requests,
        statistics.median(r.replica_hours for r in results),
        requests,
        within,
    )
    return row, ups


def _delays(results: list[RunResult], trace: Trace, direction: int) -> list[float]:
    delays = []
    for result in results:
        for time_s, sign in trace.steps:
            delay = first_decision_after(result, time_s, direction) if sign == direction else None
            if delay is not None:
                delays.append(delay)
    return delays


def _spread(delays: Sequence[float]) -> str:
    """Median/p90 of decision delays, in seconds."""
    if not delays:
        return "-"
    p90 = statistics.quantiles(delays, n=10, method="inclusive")[-1] if len(delays) > 1 else delays[0]
    return f"{statistics.median(delays):.1f}/{p90:.1f}"


def print_table(rows: list[Row]) -> None:
    print(f"{'trace':<9} {'rule':<5} {'up decision s':>14} {'down decision s':>16} {'TTFT SLO %':>10} {'replica-h':>9}")
    print(f"{'':<9} {'':<5} {'(med/p90)':>14} {'(med/p90)':>16}")
    for row in rows:
        print(
            f"{row.trace:<9} {row.rule:<5} {_spread(row.ups):>14} {_spread(row.downs):>16} "
            f"{100 * row.slo_share:>10.2f} {row.replica_hours:>9.2f}"
        )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mimo-serve bench autoscaler", description=__doc__)
    parser.add_argument("--rounds", type=int, default=20, help="seeds and timer phases per trace")
    parser.add_argument("--slo-s", type=float, default=2.0, help="time-to-first-token SLO")
    parser.add_argument("--interval-s", type=float, default=5.0, help="our timer (the operator's default)")
    parser.add_argument("--scrape-s", type=float, default=5.0, help="Prometheus scrape interval, for both rules")
    parser.add_argument("--down-window-s", type=int, default=60, help="our scale-down stabilization window")
    parser.add_argument("--startup-s", type=float, default=30.0, help="replica start-up delay")
    parser.add_argument("--throughput-rps", type=float, default=2.0, help="requests/s of one full replica")
    parser.add_argument("--max-replicas", type=int, default=40)
    parser.add_argument("--trace", action="append", choices=[t.name for t in TRACES], help="default: all")
    args = parser.parse_args(list(argv))
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: Sequence[str]) -> int:
    """Entry point of `mimo-serve bench autoscaler`; returns the exit code."""
    args = parse_args(argv)
    model = WorkerModel(throughput_rps=args.throughput_rps, startup_s=args.startup_s)
    setups = build_setups(args)
    traces = [t for t in TRACES if not args.trace or t.name in args.trace]
    rows: list[Row] = []
    ups: dict[str, list[float]] = {s.name: [] for s in setups}
    for trace in traces:
        for setup in setups:
            row, delays = run_trace(trace, setup, args, model)
            rows.append(row)
            ups[setup.name] += delays
    print(
        f"# {args.rounds} rounds per trace; replica: {model.throughput_rps:g} req/s, {model.slots} slots, "
        f"{model.startup_s:g} s start-up; TTFT SLO {args.slo_s:g} s; scrape {args.scrape_s:g} s; "
        f"ours: {args.interval_s:g} s timer, {args.down_window_s} s down window; hpa: 15 s sync, 300 s"
    )
    print_table(rows)
    for setup in setups:
        mine = [r for r in rows if r.rule == setup.name]
        share = sum(r.within for r in mine) / sum(r.requests for r in mine)
        hours = sum(r.replica_hours for r in mine)
        print(
            f"all traces, {setup.name}: {100 * share:.2f}% of requests within the TTFT SLO, {hours:.2f} replica-hours"
        )
    if not ups["ours"] or not ups["hpa"]:
        print("autoscaler decision after step: no step in the chosen traces")
        return 0
    ours, hpa = statistics.median(ups["ours"]), statistics.median(ups["hpa"])
    print(f"autoscaler decision after step: ours {ours:.1f} s vs hpa {hpa:.1f} s -> ratio {ours / hpa:.2f}")
    return 0
