"""The autoscaler benchmark's simulated pool, and its command line end to end (one quick round)."""

from __future__ import annotations

import re

import pytest

from bench import autoscaler as bench
from bench.autoscaler_sim import PoolState, RuleSetup, WorkerModel, first_decision_after, simulate
from operators.autoscaler.spec import MetricKind, parse_scaling

MODEL = WorkerModel(throughput_rps=2.0, slots=16, prefill_s=0.3, startup_s=30.0)


def test_pool_serves_within_the_slo_until_it_saturates() -> None:
    pool = PoolState(MODEL, slo_s=2.0, ready=2)  # 2 replicas: 4 req/s sustained
    for i in range(400):
        pool.step(i * 0.25, 0.25, 0.75)  # 3 req/s
    assert pool.within_slo == pytest.approx(pool.requests)
    assert pool.metric(MetricKind.WAITING_REQUESTS) == 0
    assert 0.6 < (pool.metric(MetricKind.KV_CACHE_USAGE) or 0) < 0.9
    for i in range(400, 800):
        pool.step(i * 0.25, 0.25, 2.0)  # 8 req/s: twice the capacity
    assert (pool.metric(MetricKind.WAITING_REQUESTS) or 0) > 100
    assert pool.within_slo < pool.requests


def test_new_replicas_serve_only_after_start_up() -> None:
    pool = PoolState(MODEL, slo_s=2.0, ready=1)
    pool.scale_to(3, now_s=0.0)
    assert (pool.ready, pool.provisioned) == (1, 3)
    pool.step(29.0, 0.25, 0.0)
    assert pool.ready == 1
    pool.step(30.0, 0.25, 0.0)
    assert pool.ready == 3
    pool.scale_to(1, now_s=31.0)
    assert pool.ready == 1 and pool.metric(MetricKind.WAITING_REQUESTS) == 0


def test_closed_loop_scales_up_after_a_step_and_back_down_after_the_window() -> None:
    spec = parse_scaling(
        {
            "maxReplicas": 30,
            "autoscaling": {"metrics": bench.METRICS, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}},
        }
    )
    setup = RuleSetup("ours", spec, interval_s=5.0, scrape_s=5.0)
    result = simulate(setup, lambda t: 24.0 if 300 <= t < 900 else 8.0, 1500.0, model=MODEL, slo_s=2.0, seed=1)
    up = first_decision_after(result, 300.0, +1)
    down = first_decision_after(result, 900.0, -1)
    assert up is not None and up <= 10.0
    assert down is not None and down >= 55.0
    assert result.max_replicas >= 24 / 2.0  # the step needs at least 12 full replicas


def test_bench_prints_the_table_and_the_headline_last(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--rounds", "2", "--trace", "step"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("step      ours") for line in lines)
    match = re.fullmatch(
        r"autoscaler decision after step: ours ([\d.]+) s vs hpa ([\d.]+) s -> ratio ([\d.]+)", lines[-1]
    )
    assert match, lines[-1]
    assert float(match.group(1)) <= 10.0
