"""`python -m loadtest`: flags → a headless locust run in this process → the stats table and the SLO verdict.

The run uses locust's Environment API (not `locust.main`), so the statistics and the exit code come from
this module: 0 when every bound holds, 1 when one breaks, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from locust.env import Environment
from locust.util.timespan import parse_timespan

from loadtest.schedules import SCHEDULES, Stage
from loadtest.shapes import StagesShape
from loadtest.slo import P95Bound, Recorder, Slo, Verdict, check, render_table, summary
from loadtest.tasks import TASKS, MimoUser, user_class
from loadtest.workload import Workload

EXIT_OK, EXIT_BREACH, EXIT_USAGE = 0, 1, 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest",
        description="Headless locust run against the MiMo router over gRPC; exits 1 when an SLO bound breaks.",
    )
    p.add_argument("--target", default="127.0.0.1:50051", help="router HOST:PORT (Inference and Rollout)")
    p.add_argument("--verifier", default=None, help="verifier HOST:PORT (needed by the verify task)")
    p.add_argument("--users", type=int, default=4, help="peak number of concurrent users")
    p.add_argument("--spawn-rate", type=float, default=4.0, help="users started per second")
    p.add_argument("--run-time", default="30s", help="how long, e.g. 20s, 5m, 1h30m")
    p.add_argument("--shape", choices=sorted(SCHEDULES), default="steady")
    p.add_argument("--steps", type=int, default=4, help="step shape: number of steps")
    p.add_argument("--spike-base-users", type=int, default=None, help="spike shape: users outside the spike")
    p.add_argument("--tasks", default="chat,chat_stream", help=f"comma-separated, from {','.join(TASKS)}")
    p.add_argument("--max-new-tokens", type=int, default=32, help="per chat request and rollout sample")
    p.add_argument("--rollout-prompts", type=int, default=2, help="prompts per rollout")
    p.add_argument("--rollout-samples", type=int, default=2, help="samples per rollout prompt")
    p.add_argument("--timeout-s", type=float, default=60.0, help="deadline of each call")
    p.add_argument(
        "--stop-timeout-s", type=float, default=0.0, help="at the end, let users finish their task this long"
    )
    p.add_argument("--max-error-rate", type=float, default=0.01, help="failed calls / calls, at most")
    p.add_argument(
        "--max-p95-ms",
        action="append",
        default=[],
        metavar="NAME=MS",
        help='p95 bound of a row, e.g. "ChatStream ttft=500" (repeatable)',
    )
    p.add_argument("--summary-json", type=Path, default=None, help="also write the rows and verdicts here")
    p.add_argument("--loglevel", default="WARNING", help="locust's log level")
    return p


@dataclass(frozen=True, slots=True)
class Plan:
    """A parsed command line: what to run, for how long, and the bounds to hold."""

    user: type[MimoUser]
    stages: tuple[Stage, ...]
    run_time_s: float
    stop_timeout_s: float
    slo: Slo


def plan_from_args(args: argparse.Namespace) -> Plan:
    """Raises ValueError naming the flag when one is wrong."""
    run_time_s = float(parse_timespan(args.run_time))
    shape_options = {"step": {"num_steps": args.steps}, "spike": {"base_users": args.spike_base_users}}
    stages = SCHEDULES[args.shape](args.users, args.spawn_rate, run_time_s, **shape_options.get(args.shape, {}))
    if not 0 <= args.max_error_rate <= 1:
        raise ValueError(f"--max-error-rate must be between 0 and 1, got {args.max_error_rate}")
    if args.max_new_tokens < 1 or args.rollout_prompts < 1 or args.rollout_samples < 1:
        raise ValueError("--max-new-tokens, --rollout-prompts and --rollout-samples must be at least 1")
    workload = Workload(args.max_new_tokens, args.rollout_prompts, args.rollout_samples)
    task_names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    user = user_class(args.target, task_names, workload, args.verifier, args.timeout_s)
    bounds = tuple(P95Bound.parse(b) for b in args.max_p95_ms)
    return Plan(user, stages, run_time_s, args.stop_timeout_s, Slo(args.max_error_rate, bounds))


def run(plan: Plan) -> tuple[Recorder, float]:
    """Plays the shape to its end with a local runner; returns what was recorded and the seconds it took."""
    env = Environment(user_classes=[plan.user], shape_class=StagesShape(plan.stages), stop_timeout=plan.stop_timeout_s)
    recorder = Recorder()
    env.events.request.add_listener(recorder.on_request)
    env.events.user_error.add_listener(recorder.on_user_error)
    runner = env.create_local_runner()
    started = time.perf_counter()
    runner.start_shape()
    shape = runner.shape_greenlet
    assert shape is not None
    # The shape stops the users itself when its last stage ends (it ticks once a second).
    shape.join(timeout=plan.run_time_s + plan.stop_timeout_s + 30)
    elapsed_s = time.perf_counter() - started
    runner.quit()
    return recorder, elapsed_s


def report(recorder: Recorder, verdicts: list[Verdict], elapsed_s: float) -> str:
    lines = [render_table(recorder, elapsed_s), ""]
    lines += [f"SLO {'ok    ' if v.is_ok else 'BROKEN'} {v.text}" for v in verdicts]
    broken = [v.text for v in verdicts if not v.is_ok]
    num_calls, num_failures = recorder.call_totals()
    if broken:
        lines.append(f"loadtest: FAIL after {elapsed_s:.1f}s: " + "; ".join(broken))
    else:
        lines.append(f"loadtest: PASS: {num_calls} calls, {num_failures} failed, in {elapsed_s:.1f}s")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.loglevel.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        plan = plan_from_args(args)
    except ValueError as e:
        print(f"python -m loadtest: {e}", file=sys.stderr)
        return EXIT_USAGE
    recorder, elapsed_s = run(plan)
    verdicts = check(plan.slo, recorder)
    print(report(recorder, verdicts, elapsed_s), flush=True)
    if args.summary_json is not None:
        args.summary_json.write_text(json.dumps(summary(recorder, verdicts, elapsed_s), indent=2))
    return EXIT_OK if all(v.is_ok for v in verdicts) else EXIT_BREACH
