"""Per-request outcomes of an open-loop run and what they add up to: throughput, goodput, percentiles."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request: when it was due and sent, its time to first token, gaps between tokens, end, and error."""

    due_s: float
    ttft_s: float | None
    e2e_s: float | None
    itls_s: tuple[float, ...] = ()
    num_tokens: int = 0
    error: str | None = None

    @property
    def tpot_s(self) -> float | None:
        """Mean time per output token after the first."""
        if self.ttft_s is None or self.e2e_s is None or self.num_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.num_tokens - 1)


@dataclass(frozen=True, slots=True)
class SloSpec:
    """Bounds one request must meet to count as good (None: unbounded)."""

    max_ttft_ms: float | None = None
    max_tpot_ms: float | None = None
    max_e2e_ms: float | None = None

    def is_met(self, o: Outcome) -> bool:
        if o.error is not None or o.e2e_s is None:
            return False
        checks = ((self.max_ttft_ms, o.ttft_s), (self.max_tpot_ms, o.tpot_s), (self.max_e2e_ms, o.e2e_s))
        return all(bound is None or (value is not None and value * 1000 <= bound) for bound, value in checks)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); NaN without values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _cdf_points_ms(values: Sequence[float], num: int = 200) -> tuple[float, ...]:
    ordered = sorted(values)
    if len(ordered) <= num:
        return tuple(v * 1000 for v in ordered)
    return tuple(ordered[round(i * (len(ordered) - 1) / (num - 1))] * 1000 for i in range(num))


def _quantiles_ms(values: Sequence[float]) -> dict[str, float]:
    return {f"p{round(q * 100)}": percentile(values, q) * 1000 for q in (0.5, 0.9, 0.99)}


@dataclass(frozen=True, slots=True)
class RateResult:
    """One rate of a sweep: what was offered, what came back, and whether it holds the SLO."""

    offered_rps: float
    duration_s: float
    num_requests: int
    num_errors: int
    num_good: int
    throughput_rps: float
    goodput_rps: float
    output_tps: float
    ttft_ms: dict[str, float]
    itl_ms: dict[str, float]
    tpot_ms: dict[str, float]
    e2e_ms: dict[str, float]
    workers: dict[str, float]
    is_sustainable: bool
    cdf_ms: dict[str, tuple[float, ...]]  # "ttft", "itl": at most 200 evenly spaced order statistics

    @property
    def error_rate(self) -> float:
        return self.num_errors / self.num_requests if self.num_requests else 1.0

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "error_rate": self.error_rate}


def summarise(
    offered_rps: float,
    duration_s: float,
    outcomes: Sequence[Outcome],
    slo: SloSpec,
    min_good_fraction: float,
    max_error_rate: float,
    workers: dict[str, float] | None = None,
) -> RateResult:
    """Rates are per second of `duration_s` (the send window): a request counts when it is good, not when it ends.

    Sustainable: at most `max_error_rate` failed and at least `min_good_fraction` of the requests good.
    """
    ok = [o for o in outcomes if o.error is None and o.e2e_s is not None]
    ttfts = [o.ttft_s for o in ok if o.ttft_s is not None]
    itls = [g for o in ok for g in o.itls_s]
    num_good = sum(slo.is_met(o) for o in outcomes)
    num_errors = len(outcomes) - len(ok)
    n = len(outcomes)
    is_sustainable = n > 0 and num_errors <= max_error_rate * n and num_good >= min_good_fraction * n
    return RateResult(
        offered_rps=offered_rps,
        duration_s=duration_s,
        num_requests=n,
        num_errors=num_errors,
        num_good=num_good,
        throughput_rps=len(ok) / duration_s,
        goodput_rps=num_good / duration_s,
        output_tps=sum(o.num_tokens for o in ok) / duration_s,
        ttft_ms=_quantiles_ms(ttfts),
        itl_ms=_quantiles_ms(itls),
        tpot_ms=_quantiles_ms([t for o in ok if (t := o.tpot_s) is not None]),
        e2e_ms=_quantiles_ms([o.e2e_s for o in ok if o.e2e_s is not None]),
        workers=workers or {},
        is_sustainable=is_sustainable,
        cdf_ms={"ttft": _cdf_points_ms(ttfts), "itl": _cdf_points_ms(itls)},
    )
