"""Per-row latency statistics of a load test, the SLO bounds it is held to, and the table it prints.

Pure Python (no locust, no gevent): the runner feeds `Recorder.on_request` from locust's request event.
Locust rounds response times into coarse buckets (whole milliseconds below 100 ms); inter-token gaps are a
few milliseconds, so rows keep their own histogram with 1% buckets instead.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

CALL_TYPE = "grpc"  # whole calls and streams: the error rate is taken over these rows
STREAM_TYPE = "stream"  # derived from streams: time to first token, inter-token gaps, time per token


class CheckFailed(Exception):
    """A call that returned OK but whose answer is wrong (an error finish, a missing event, a bad verdict)."""


_BUCKET_RATIO = 1.01  # relative width of a histogram bucket: quantiles are exact to within 0.5%
_LOG_RATIO = math.log(_BUCKET_RATIO)


@dataclass(slots=True)
class Histogram:
    """Log-bucketed latencies in milliseconds: bounded memory however long the run."""

    buckets: Counter[int] = field(default_factory=Counter)
    num_zero: int = 0
    count: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0

    def add(self, value_ms: float) -> None:
        self.count += 1
        self.total_ms += value_ms
        self.max_ms = max(self.max_ms, value_ms)
        if value_ms <= 0:
            self.num_zero += 1
        else:
            self.buckets[math.floor(math.log(value_ms) / _LOG_RATIO)] += 1

    def quantile_ms(self, q: float) -> float:
        """The smallest recorded value with at least a fraction q of all values at or below it (nearest rank)."""
        if self.count == 0:
            return math.nan
        rank = max(1, math.ceil(q * self.count))
        seen = self.num_zero
        if seen >= rank:
            return 0.0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(self.max_ms, _BUCKET_RATIO ** (index + 0.5))
        return self.max_ms

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.count if self.count else math.nan


@dataclass(slots=True)
class Row:
    """One line of the table: a request type and name."""

    kind: str
    name: str
    latency: Histogram = field(default_factory=Histogram)
    num_failures: int = 0
    total_length: int = 0

    @property
    def count(self) -> int:
        return self.latency.count


@dataclass(slots=True)
class Recorder:
    """Collects every request event of a run: rows, error texts, and unexpected exceptions of tasks."""

    rows: dict[tuple[str, str], Row] = field(default_factory=dict)
    errors: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    task_exceptions: Counter[str] = field(default_factory=Counter)

    def on_request(
        self,
        request_type: str,
        name: str,
        response_time: float,
        response_length: int,
        exception: BaseException | None = None,
        **_: Any,
    ) -> None:
        """Locust's `request` event listener."""
        row = self.rows.get((request_type, name))
        if row is None:
            row = self.rows[(request_type, name)] = Row(request_type, name)
        row.latency.add(response_time)
        row.total_length += response_length or 0
        if exception is not None:
            row.num_failures += 1
            self.errors[(request_type, name, str(exception) or type(exception).__name__)] += 1

    def on_user_error(self, exception: BaseException, **_: Any) -> None:
        """Locust's `user_error` event listener: a task raised something other than a reported failure."""
        self.task_exceptions[f"{type(exception).__name__}: {exception}"] += 1

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows.values() if r.name == name), None)

    def call_totals(self) -> tuple[int, int]:
        """(requests, failures) over whole calls."""
        calls = [r for r in self.rows.values() if r.kind == CALL_TYPE]
        return sum(r.count for r in calls), sum(r.num_failures for r in calls)


@dataclass(frozen=True, slots=True)
class P95Bound:
    """`NAME=MS`: the 95th percentile of row NAME must be at most MS milliseconds."""

    name: str
    max_ms: float

    @classmethod
    def parse(cls, text: str) -> P95Bound:
        name, sep, value = text.rpartition("=")
        if not sep or not name.strip():
            raise ValueError(f"--max-p95-ms: expected NAME=MS, got {text!r}")
        try:
            max_ms = float(value)
        except ValueError:
            raise ValueError(f"--max-p95-ms: {value!r} is not a number of milliseconds (in {text!r})") from None
        if not max_ms > 0:
            raise ValueError(f"--max-p95-ms: the bound must be positive (in {text!r})")
        return cls(name.strip(), max_ms)


@dataclass(frozen=True, slots=True)
class Slo:
    """The bounds a run must keep to pass."""

    max_error_rate: float = 0.01
    p95_bounds: tuple[P95Bound, ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    """One bound, checked: `text` says what was measured against what."""

    bound: str
    is_ok: bool
    text: str


def check(slo: Slo, recorder: Recorder) -> list[Verdict]:
    """Every bound of `slo` against what `recorder` saw; a run without completed calls breaks the error bound."""
    num_calls, num_failures = recorder.call_totals()
    verdicts = []
    if num_calls == 0:
        verdicts.append(Verdict("error rate", False, "error rate: no calls were made"))
    else:
        rate = num_failures / num_calls
        is_ok = rate <= slo.max_error_rate
        op = "<=" if is_ok else ">"
        text = f"error rate {rate:.2%} ({num_failures}/{num_calls}) {op} max {slo.max_error_rate:.2%}"
        verdicts.append(Verdict("error rate", is_ok, text))
    if recorder.task_exceptions:
        num = sum(recorder.task_exceptions.values())
        verdicts.append(Verdict("task exceptions", False, f"{num} unexpected exceptions in tasks"))
    for bound in slo.p95_bounds:
        verdicts.append(_check_p95(bound, recorder))
    return verdicts


def _check_p95(bound: P95Bound, recorder: Recorder) -> Verdict:
    label = f'p95 of "{bound.name}"'
    row = recorder.row(bound.name)
    if row is None or row.count == 0:
        known = ", ".join(sorted(r.name for r in recorder.rows.values())) or "none"
        return Verdict(label, False, f"{label}: no samples (rows seen: {known})")
    p95 = row.latency.quantile_ms(0.95)
    is_ok = p95 <= bound.max_ms
    op = "<=" if is_ok else ">"
    return Verdict(label, is_ok, f"{label} {_ms(p95)} ms {op} max {_ms(bound.max_ms)} ms")


def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.3g}" if value < 10 else f"{value:.0f}"


def render_table(recorder: Recorder, elapsed_s: float) -> str:
    """The per-row table (calls first, then stream-derived rows), then the errors seen."""
    header = (
        f"{'Type':<7}{'Name':<28}{'# reqs':>8}{'# fails':>9}{'req/s':>8}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'avg len':>9}"
    )
    lines = [header, "-" * len(header)]
    ordered = sorted(recorder.rows.values(), key=lambda r: (r.kind != CALL_TYPE, r.name))
    for row in ordered:
        h = row.latency
        rate = row.count / elapsed_s if elapsed_s > 0 else math.nan
        lines.append(
            f"{row.kind:<7}{row.name:<28}{row.count:>8}{row.num_failures:>9}{rate:>8.1f}"
            f"{_ms(h.quantile_ms(0.5)):>9}{_ms(h.quantile_ms(0.95)):>9}{_ms(h.quantile_ms(0.99)):>9}"
            f"{_ms(h.max_ms):>9}{row.total_length / max(1, row.count):>9.1f}"
        )
    if recorder.errors:
        lines += ["", "Errors:"]
        for (kind, name, text), count in recorder.errors.most_common():
            lines.append(f"{count:>8}  {kind} {name}: {text}")
    if recorder.task_exceptions:
        lines += ["", "Task exceptions:"]
        lines += [f"{count:>8}  {text}" for text, count in recorder.task_exceptions.most_common()]
    return "\n".join(lines)


def summary(recorder: Recorder, verdicts: list[Verdict], elapsed_s: float) -> dict[str, Any]:
    """The run as plain data (written by --summary-json)."""
    rows = [
        {
            "type": r.kind,
            "name": r.name,
            "count": r.count,
            "failures": r.num_failures,
            "p50_ms": r.latency.quantile_ms(0.5),
            "p95_ms": r.latency.quantile_ms(0.95),
            "p99_ms": r.latency.quantile_ms(0.99),
            "max_ms": r.latency.max_ms,
            "mean_ms": r.latency.mean_ms,
            "total_length": r.total_length,
        }
        for r in recorder.rows.values()
    ]
    errors = [{"type": k, "name": n, "error": e, "count": c} for (k, n, e), c in recorder.errors.items()]
    return {
        "elapsed_s": elapsed_s,
        "passed": all(v.is_ok for v in verdicts),
        "rows": rows,
        "errors": errors,
        "verdicts": [{"bound": v.bound, "ok": v.is_ok, "text": v.text} for v in verdicts],
    }
