"""The status written after an evaluation: conditions, transitions, and writing only what changed."""

from __future__ import annotations

from operators.autoscaler.scaling import Decision, History, Limit
from operators.autoscaler.spec import parse_pool
from operators.autoscaler.status import Readings, Tick, build_status, changed_fields

POOL = parse_pool({"metadata": {"name": "p", "namespace": "n"}, "spec": {"model": "/m", "maxReplicas": 8}})


def tick(current: int, desired: int, value: float | None, errors: tuple[str, ...] = (), ready: int = 0) -> Tick:
    proposal = None if value is None else desired
    limit = Limit.MAX_REPLICAS if desired == 8 else Limit.NONE
    decision = Decision(current, desired, (proposal,), value is not None, limit, "why", History())
    return Tick(POOL, decision, Readings((value,), None, errors), ready, ready)


def conditions(status: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_healthy_scale_up() -> None:
    status = build_status(tick(2, 4, 16.0, ready=2), "sel", {}, "T1")
    assert (status["currentReplicas"], status["desiredReplicas"]) == (2, 4)
    assert status["lastScaleTime"] == "T1" and status["selector"] == "sel"
    assert status["metrics"][0]["value"] == 8.0  # per replica: 16 over 2
    assert conditions(status) == {
        "Ready": "True",
        "ScalingActive": "True",
        "ScalingLimited": "False",
        "MetricsUnavailable": "False",
    }


def test_metrics_unavailable_sets_the_conditions() -> None:
    status = build_status(tick(3, 3, None, errors=("connection refused",)), "sel", {}, "T1")
    assert conditions(status)["MetricsUnavailable"] == "True"
    assert conditions(status)["ScalingActive"] == "False"
    message = next(c["message"] for c in status["conditions"] if c["type"] == "MetricsUnavailable")
    assert "connection refused" in message
    assert "lastScaleTime" not in status and "value" not in status["metrics"][0]


def test_limited_by_max_replicas() -> None:
    status = build_status(tick(4, 8, 100.0), "sel", {}, "T1")
    limited = next(c for c in status["conditions"] if c["type"] == "ScalingLimited")
    assert limited["status"] == "True" and limited["reason"] == "TooManyReplicas"


def test_transition_time_moves_only_on_flips_and_unchanged_status_writes_nothing() -> None:
    first = build_status(tick(2, 2, 8.0), "sel", {}, "T1")
    again = build_status(tick(2, 2, 8.0), "sel", first, "T2")
    assert again == first and changed_fields(again, first) == {}
    broken = build_status(tick(2, 2, None, errors=("down",)), "sel", again, "T3")
    times = {c["type"]: c["lastTransitionTime"] for c in broken["conditions"]}
    assert times["MetricsUnavailable"] == "T3" and times["Ready"] == "T1"
    assert set(changed_fields(broken, again)) == {"metrics", "conditions"}
