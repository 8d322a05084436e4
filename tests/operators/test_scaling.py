"""The scaling rule: table-driven cases and properties (hypothesis), no Kubernetes involved."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.autoscaler.scaling import History, Limit, Observation, decide, propose
from operators.autoscaler.spec import (
    MetricKind,
    MetricSpec,
    PolicyKind,
    RatePolicy,
    ScaleToZero,
    ScalingRules,
    ScalingSpec,
    TargetType,
)

WAITING = MetricSpec(MetricKind.WAITING_REQUESTS, 4.0, TargetType.AVERAGE_VALUE, "WaitingRequests")
KV = MetricSpec(MetricKind.KV_CACHE_USAGE, 0.7, TargetType.VALUE, "KVCacheUsage")
UP_FAST = ScalingRules(0.0, (RatePolicy(PolicyKind.PERCENT, 100, 15.0), RatePolicy(PolicyKind.PODS, 4, 15.0)))
DOWN_60 = ScalingRules(60.0, (RatePolicy(PolicyKind.PERCENT, 100, 15.0),))


def make_spec(**kwargs: object) -> ScalingSpec:
    fields: dict[str, object] = {
        "min_replicas": 1,
        "max_replicas": 20,
        "metrics": (WAITING,),
        "scale_up": UP_FAST,
        "scale_down": DOWN_60,
    }
    fields.update(kwargs)
    return ScalingSpec(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("metric", "value", "current", "expected"),
    [
        (WAITING, 16.0, 2, 4),  # AverageValue: ceil(total / target), whatever the current count
        (WAITING, 16.0, 8, 4),
        (WAITING, 8.4, 2, 2),  # 4.2 per replica: within 10 % of 4
        (WAITING, 0.0, 5, 0),
        (KV, 0.7, 3, 3),
        (KV, 0.95, 4, 6),  # Value: ceil(4 * 0.95 / 0.7)
        (KV, 0.35, 4, 2),
        (WAITING, None, 3, None),
        (WAITING, float("nan"), 3, None),
    ],
)
def test_propose_per_metric(metric: MetricSpec, value: float | None, current: int, expected: int | None) -> None:
    assert propose(metric, value, current, 0.1) == expected


@pytest.mark.parametrize(
    ("name", "current", "values", "expected", "limit"),
    [
        ("step up within the rate policy", 2, (16.0,), 4, Limit.NONE),
        ("up capped at max(100 %, 4 pods) per period", 2, (200.0,), 6, Limit.SCALE_UP_RATE),
        ("up capped by maxReplicas", 18, (400.0,), 20, Limit.MAX_REPLICAS),
        ("within tolerance holds", 5, (21.0,), 5, Limit.NONE),
        ("the largest proposal wins", 2, (4.0, 0.95), 3, Limit.NONE),
        ("missing metric holds", 3, (None,), 3, Limit.NONE),
        ("partial metrics may grow", 2, (None, 1.4), 4, Limit.NONE),
        ("partial metrics never shrink", 6, (None, 0.1), 6, Limit.NONE),
        ("below minReplicas is raised", 1, (4.0,), 3, Limit.MIN_REPLICAS),
    ],
)
def test_decide_table(name: str, current: int, values: tuple[float | None, ...], expected: int, limit: Limit) -> None:
    metrics = (WAITING,) if len(values) == 1 else (WAITING, KV)
    spec = make_spec(metrics=metrics, min_replicas=3 if "minReplicas" in name else 1)
    decision = decide(spec, Observation(current, values), History(), now_s=100.0)
    assert (decision.desired_replicas, decision.limited_by) == (expected, limit), name


def test_scale_down_waits_for_its_window() -> None:
    spec = make_spec()
    history, current = History(), 2
    desired = decide(spec, Observation(2, (32.0,)), history, 0.0)  # 8 wanted, the rate allows 2 + 4
    history, current = desired.history, desired.desired_replicas
    assert current == 6
    times = [5.0 * i for i in range(1, 40)]
    first_down = None
    for now in times:
        decision = decide(spec, Observation(current, (0.0,)), history, now)
        history = decision.history
        if decision.desired_replicas < current and first_down is None:
            first_down = now
        current = decision.desired_replicas
    assert first_down is not None and first_down >= 60.0
    assert current == 1


def test_scale_up_rate_is_per_period() -> None:
    spec = make_spec(max_replicas=100)
    decision = decide(spec, Observation(2, (400.0,)), History(), 0.0)
    assert decision.desired_replicas == 6  # 2 + max(2, 4)
    again = decide(spec, Observation(6, (400.0,)), decision.history, 5.0)
    assert again.desired_replicas == 6 and again.limited_by is Limit.SCALE_UP_RATE  # same 15 s period
    later = decide(spec, Observation(6, (400.0,)), again.history, 16.0)
    assert later.desired_replicas == 12  # a new period: 6 + max(6, 4)


def test_operator_restart_holds_scale_down_for_a_window() -> None:
    spec = make_spec()
    first = decide(spec, Observation(8, (0.0,)), History(), 1000.0)
    assert first.desired_replicas == 8
    later = decide(spec, Observation(8, (0.0,)), first.history, 1061.0)
    assert later.desired_replicas == 1


def test_scale_to_zero_after_idle_and_wake_on_activity() -> None:
    spec = make_spec(scale_to_zero=ScaleToZero(idle_s=30.0))
    history, current = History(), 1
    for now in (0.0, 10.0, 20.0):
        decision = decide(spec, Observation(current, (0.0,), activity=0.0), history, now)
        history, current = decision.history, decision.desired_replicas
    assert current == 1
    decision = decide(spec, Observation(1, (0.0,), activity=0.0), history, 31.0)
    assert decision.desired_replicas == 0
    asleep = decide(spec, Observation(0, (None,), activity=None), decision.history, 40.0)
    assert asleep.desired_replicas == 0
    woken = decide(spec, Observation(0, (None,), activity=3.0), asleep.history, 41.0)
    assert woken.desired_replicas == spec.min_replicas


def test_unknown_activity_never_scales_to_zero() -> None:
    spec = make_spec(scale_to_zero=ScaleToZero(idle_s=1.0))
    history = History()
    for now in range(0, 100, 5):
        decision = decide(spec, Observation(2, (0.0,), activity=None), history, float(now))
        history = decision.history
        assert decision.desired_replicas >= 1


# Properties over random specs, observations and histories.

rates = st.builds(
    RatePolicy, st.sampled_from(list(PolicyKind)), st.integers(1, 200), st.sampled_from([5.0, 15.0, 60.0])
)
rules = st.builds(
    ScalingRules, st.sampled_from([0.0, 15.0, 60.0, 300.0]), st.lists(rates, min_size=1, max_size=3).map(tuple)
)
values = st.one_of(st.none(), st.floats(0.0, 1000.0))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ScalingSpec, list[tuple[float, int, float | None]]]:
    low = draw(st.integers(1, 10))
    spec = make_spec(
        min_replicas=low,
        max_replicas=draw(st.integers(low, 40)),
        tolerance=draw(st.sampled_from([0.0, 0.1, 0.3])),
        scale_up=draw(rules),
        scale_down=draw(rules),
    )
    steps = draw(st.lists(st.tuples(st.floats(0.5, 30.0), st.integers(1, 50), values), min_size=1, max_size=25))
    return spec, steps


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_never_outside_min_max(scenario: tuple[ScalingSpec, list[tuple[float, int, float | None]]]) -> None:
    spec, steps = scenario
    history, now = History(), 0.0
    for gap, current, value in steps:
        now += gap
        decision = decide(spec, Observation(current, (value,)), history, now)
        history = decision.history
        assert spec.min_replicas <= decision.desired_replicas <= spec.max_replicas


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 30), st.floats(-0.099, 0.099), st.sampled_from([WAITING, KV]))
def test_no_change_within_tolerance(current: int, offset: float, metric: MetricSpec) -> None:
    spec = make_spec(metrics=(metric,), max_replicas=30)
    per_replica = metric.target * (1 + offset)
    value = per_replica * current if metric.target_type is TargetType.AVERAGE_VALUE else per_replica
    assert decide(spec, Observation(current, (value,)), History(), 50.0).desired_replicas == current


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 20), st.lists(st.floats(0.0, 4.0), min_size=2, max_size=30))
def test_scale_down_keeps_the_highest_recommendation_of_its_window(start: int, loads: list[float]) -> None:
    spec = make_spec(scale_down=DOWN_60)
    history, current = History(), start
    asked: list[tuple[float, int]] = [(0.0, start)]  # the first observation counts as asking for `start`
    for i, load in enumerate(loads):
        now = 5.0 * i
        total = load * current * WAITING.target
        asked.append((now, propose(WAITING, total, current, spec.tolerance) or 0))
        decision = decide(spec, Observation(current, (total,)), history, now)
        if decision.delta < 0:  # never below anything asked for within the last window
            assert decision.desired_replicas >= max(n for t, n in asked if t >= now - 60.0)
        history, current = decision.history, decision.desired_replicas


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 30), st.lists(st.floats(0.0, 2000.0), min_size=1, max_size=20))
def test_scale_up_obeys_its_rate_policy(start: int, loads: list[float]) -> None:
    spec = make_spec(max_replicas=1000, scale_up=ScalingRules(0.0, (RatePolicy(PolicyKind.PODS, 3, 15.0),)))
    history, current, added = History(), start, []
    for i, load in enumerate(loads):
        now = 4.0 * i
        decision = decide(spec, Observation(current, (load,)), history, now)
        if decision.delta > 0:
            added.append((now, decision.delta))
        assert sum(d for t, d in added if t > now - 15.0) <= 3
        history, current = decision.history, decision.desired_replicas


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.integers(1, 10))
def test_missing_metrics_hold(current: int, ticks: int) -> None:
    spec = make_spec(max_replicas=30, scale_to_zero=ScaleToZero(idle_s=1.0))
    history = History()
    for i in range(ticks):
        decision = decide(spec, Observation(current, (None,), activity=None), history, 10.0 * i)
        assert decision.desired_replicas == max(current, spec.min_replicas)
        assert not decision.is_metrics_available
        history = decision.history
