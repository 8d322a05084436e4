"""Smoke tests of `mimo-serve bench router` and `mimo-serve bench rollout`: tiny settings, real processes.

They check what a person running the benches relies on: every table is printed, no request failed, and the
last line is the headline in its documented shape. They time nothing.
"""

from __future__ import annotations

import re

import pytest

from tests.support.bench_cli import HAS_SMG, bench, rows


def test_rollout_bench_prints_every_mode_and_the_speedup_headline():
    lines = bench("rollout", "--quick", "--verifier", "modelled")
    table = rows(lines, "mode ")
    assert [r[0] for r in table] == ["naive", "continuous", "async rewards", "early termination"]
    assert all(r[6] == "4/4" for r in table)  # every mode fills the batch of 4 valid groups
    assert re.fullmatch(
        r"full pipeline vs naive dynamic sampling: wall-clock [\d.]+ s vs [\d.]+ s -> speedup [\d.]+x; "
        r"sample waste [\d.]+% \(naive [\d.]+%\); worker idle [\d.]+% \(naive [\d.]+%\); "
        r"slot idle -?[\d.]+% \(naive -?[\d.]+%\)",
        lines[-1],
    )


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMG, reason="smg is not installed")
def test_router_bench_prints_three_tables_without_errors_and_the_overhead_headline():
    lines = bench("router", "--quick")
    latency = rows(lines, "path ")
    assert [r[0] for r in latency] == ["direct", "py-passthrough", "ours", "smg"]
    throughput = rows(lines, "router ")
    assert [r[0] for r in throughput] == ["ours", "smg", "py-passthrough"] and all(r[-1] == "0" for r in throughput)
    assert all(float(r[1]) > 0 for r in throughput)
    cache = rows(lines, "router policy")
    assert [r[0] for r in cache] == [
        "ours cache_aware",
        "ours cache_aware kv-events",
        "ours round_robin",
        "smg cache_aware kv-events",
        "smg cache_aware hash",
        "smg round_robin",
    ]
    assert all(r[-1] == "0" for r in cache)
    # SMG's own counters: its default index applied the sim workers' KV events
    prefix = "smg cache_aware kv-events, SMG's own counters during its runs:"
    counters = next(line for line in lines if line.startswith(prefix))
    stored, applied = re.search(r"blocks stored (\d+)", counters), re.search(r"batches applied (\d+)", counters)
    assert stored and applied and int(stored[1]) > 0 and int(applied[1]) > 0, counters
    assert re.fullmatch(r"router overhead p50: ours [\d.]+ ms vs smg -?[\d.]+ ms -> ratio -?[\d.]+|.*n/a.*", lines[-1])


def test_router_bench_without_smg_still_has_a_headline():
    lines = bench("router", "--quick", "--skip-smg", "--parts", "latency")
    assert [r[0] for r in rows(lines, "path ")] == ["direct", "py-passthrough", "ours"]
    assert re.fullmatch(r"router overhead p50: ours -?[\d.]+ ms over direct \(smg skipped\)", lines[-1])
