"""Goodput accounting: a request is good only when it succeeded and met every SLO bound; sustainable rates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.goodput import Outcome, SloSpec, percentile, summarise

REPO = Path(__file__).resolve().parents[2]


def ok(ttft_s: float, e2e_s: float, num_tokens: int = 11, due_s: float = 0.0) -> Outcome:
    return Outcome(due_s, ttft_s, e2e_s, itls_s=(0.01,) * (num_tokens - 1), num_tokens=num_tokens)


def test_each_bound_rejects_a_request_on_its_own():
    slo = SloSpec(max_ttft_ms=100, max_tpot_ms=20, max_e2e_ms=500)
    assert slo.is_met(ok(0.05, 0.2))  # tpot (0.2 - 0.05) / 10 = 15 ms
    assert not slo.is_met(ok(0.15, 0.3))  # ttft 150 ms
    assert not slo.is_met(ok(0.05, 0.3))  # tpot 25 ms
    assert not slo.is_met(ok(0.05, 0.6, num_tokens=101))  # e2e 600 ms, tpot 5.5 ms
    assert not slo.is_met(Outcome(0.0, None, None, error="UNAVAILABLE: down"))
    assert SloSpec().is_met(ok(9.0, 99.0))  # no bounds: every success is good


def test_a_one_token_answer_has_no_tpot_and_fails_only_a_tpot_bound():
    one = ok(0.05, 0.05, num_tokens=1)
    assert one.tpot_s is None
    assert SloSpec(max_ttft_ms=100).is_met(one) and not SloSpec(max_tpot_ms=100).is_met(one)


def test_goodput_throughput_errors_and_the_verdict():
    outcomes = [ok(0.05, 0.2)] * 7 + [ok(0.5, 0.9)] * 2 + [Outcome(0.0, None, None, error="DEADLINE_EXCEEDED: late")]
    result = summarise(5.0, 2.0, outcomes, SloSpec(max_ttft_ms=100), min_good_fraction=0.7, max_error_rate=0.1)
    assert (result.num_requests, result.num_good, result.num_errors) == (10, 7, 1)
    assert result.throughput_rps == pytest.approx(9 / 2.0) and result.goodput_rps == pytest.approx(7 / 2.0)
    assert result.output_tps == pytest.approx(9 * 11 / 2.0)
    assert result.error_rate == pytest.approx(0.1) and result.is_sustainable
    assert result.ttft_ms["p50"] == pytest.approx(50) and result.ttft_ms["p90"] == pytest.approx(500)
    strict = summarise(5.0, 2.0, outcomes, SloSpec(max_ttft_ms=100), min_good_fraction=0.8, max_error_rate=0.1)
    assert not strict.is_sustainable  # 7 of 10 good < 80%
    no_errors = summarise(5.0, 2.0, outcomes, SloSpec(), min_good_fraction=0.5, max_error_rate=0.0)
    assert not no_errors.is_sustainable  # one error > 0%


def test_no_requests_is_never_sustainable():
    assert not summarise(1.0, 1.0, [], SloSpec(), 0.0, 1.0).is_sustainable


def test_nearest_rank_percentiles():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.9), percentile(values, 0.99)) == (50, 90, 99)


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "give --rates R1,R2,... or --find"),
        (["--rates", "1,fast"], "--rates: not a list of numbers"),
        (["--rates", "0,2"], "--rates: every rate must be positive"),
        (["--find", "--min-rate", "4", "--max-rate", "2"], "--min-rate must be positive and below --max-rate"),
        (["--rates", "1", "--max-error-rate", "2"], "--max-error-rate must be between 0 and 1"),
    ],
)
def test_sweep_bad_flags_exit_2_naming_the_flag(args, message):
    cmd = [sys.executable, "-m", "loadtest", "sweep", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
