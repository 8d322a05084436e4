"""Smoke test of `mimo-serve bench http`: tiny settings, real processes (our router, SMG, sim workers). It checks
what a person running it relies on: both tables, no failed request, the headline in its documented shape. It
times nothing."""

from __future__ import annotations

import re

import pytest

from tests.support.bench_cli import HAS_SMG, bench, rows


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMG, reason="smg is not installed")
def test_http_bench_prints_both_parts_and_the_headline():
    lines = bench("http", "--quick")
    assert [r[0] for r in rows(lines, "path ")] == ["direct", "ours", "smg"]
    tput = rows(lines, "router ")
    assert [r[0] for r in tput] == ["ours", "smg"] and all(r[-1] == "0" for r in tput)
    assert re.fullmatch(r"http added TTFT: p50 ours -?[\d.]+ ms vs smg -?[\d.]+ ms -> .+; p99 ours .+", lines[-1])
