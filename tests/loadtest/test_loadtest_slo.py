"""SLO bounds, the latency histogram and the printed table: what decides a load test's exit code."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import pytest

from loadtest.slo import CALL_TYPE, STREAM_TYPE, CheckFailed, Histogram, P95Bound, Recorder, Slo, check, render_table


def recorder_with(rows: dict[tuple[str, str], list[float]], failures: dict[tuple[str, str], int] | None = None):
    recorder = Recorder()
    for (kind, name), values in rows.items():
        for i, value in enumerate(values):
            failed = i < (failures or {}).get((kind, name), 0)
            recorder.on_request(kind, name, value, 3, exception=CheckFailed("bad verdict") if failed else None)
    return recorder


def test_pure_modules_import_neither_locust_nor_gevent():
    """The pytest process must never be monkey-patched: these modules are what tests import."""
    code = (
        "import sys, loadtest, loadtest.slo, loadtest.schedules, loadtest.workload;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('locust', 'gevent')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_histogram_quantiles_are_within_one_percent_of_the_exact_ones(q):
    rng = random.Random(3)
    values = [rng.lognormvariate(1.0, 1.2) for _ in range(5000)]  # 0.1 ms .. 100s of ms, like inter-token gaps
    histogram = Histogram()
    for v in values:
        histogram.add(v)
    exact = sorted(values)[math.ceil(q * len(values)) - 1]
    assert histogram.quantile_ms(q) == pytest.approx(exact, rel=0.01)
    assert histogram.max_ms == max(values) and histogram.count == 5000


def test_sub_millisecond_gaps_keep_their_value():
    histogram = Histogram()
    for v in (0.2, 0.3, 0.4, 0.0):
        histogram.add(v)
    assert histogram.quantile_ms(0.25) == 0.0
    assert histogram.quantile_ms(0.95) == pytest.approx(0.4, rel=0.01)


def test_error_rate_counts_whole_calls_not_the_stream_rows():
    recorder = recorder_with(
        {(CALL_TYPE, "ChatStream"): [50.0] * 10, (STREAM_TYPE, "ChatStream itl"): [2.0] * 300},
        failures={(CALL_TYPE, "ChatStream"): 1},
    )
    [verdict] = check(Slo(max_error_rate=0.2), recorder)
    assert verdict.is_ok and "10.00% (1/10)" in verdict.text
    [verdict] = check(Slo(max_error_rate=0.05), recorder)
    assert not verdict.is_ok and "> max 5.00%" in verdict.text


def test_p95_bound_breaks_with_the_name_measured_value_and_bound():
    recorder = recorder_with({(STREAM_TYPE, "ChatStream ttft"): [float(v) for v in range(1, 101)]})
    recorder.on_request(CALL_TYPE, "ChatStream", 120.0, 30)
    loose, tight = check(Slo(0.0, (P95Bound("ChatStream ttft", 200), P95Bound("ChatStream ttft", 10))), recorder)[1:]
    assert loose.is_ok
    assert not tight.is_ok
    assert tight.text.startswith('p95 of "ChatStream ttft" 95 ms > max 10 ms')


def test_a_bound_on_a_row_that_never_ran_is_broken_and_lists_the_rows():
    recorder = recorder_with({(CALL_TYPE, "Chat"): [10.0]})
    verdicts = check(Slo(0.0, (P95Bound.parse("ChatStream ttft=500"),)), recorder)
    assert not verdicts[1].is_ok and "no samples (rows seen: Chat)" in verdicts[1].text


def test_no_calls_at_all_and_task_exceptions_break_the_run():
    assert not check(Slo(), Recorder())[0].is_ok
    recorder = recorder_with({(CALL_TYPE, "Chat"): [10.0]})
    recorder.on_user_error(exception=KeyError("choices"))
    assert [v.bound for v in check(Slo(), recorder) if not v.is_ok] == ["task exceptions"]


@pytest.mark.parametrize(
    "text,message",
    [
        ("ChatStream ttft", "expected NAME=MS"),
        ("=5", "expected NAME=MS"),
        ("Chat=fast", "not a number"),
        ("Chat=0", "positive"),
    ],
)
def test_bad_bounds_are_rejected_naming_the_flag(text, message):
    with pytest.raises(ValueError, match="--max-p95-ms") as info:
        P95Bound.parse(text)
    assert message in str(info.value)


def test_names_with_spaces_and_equals_parse_from_the_right():
    assert P95Bound.parse(" ChatStream ttft = 500 ") == P95Bound("ChatStream ttft", 500.0)
    assert P95Bound.parse("a=b=2.5") == P95Bound("a=b", 2.5)


def test_table_lists_calls_then_stream_rows_and_the_errors():
    recorder = recorder_with(
        {
            (STREAM_TYPE, "ChatStream ttft"): [5.0, 6.0],
            (CALL_TYPE, "ChatStream"): [40.0, 60.0],
            (STREAM_TYPE, "ChatStream itl"): [1.5] * 8,
        },
        failures={(CALL_TYPE, "ChatStream"): 1},
    )
    lines = render_table(recorder, elapsed_s=2.0).splitlines()
    names = [line.split()[1:3] for line in lines[2:5]]
    assert names == [["ChatStream", "2"], ["ChatStream", "itl"], ["ChatStream", "ttft"]]
    assert "1.5" in lines[3] and lines[3].split()[3] == "8"  # 8 gaps, p50 1.5 ms
    assert lines[-1].strip() == "1  grpc ChatStream: bad verdict"
