"""The scaling rule: a pure function of (spec, observation, history, now), after the Kubernetes HPA.

Per metric: an AverageValue metric proposes ceil(total / target) (the replica count cancels, so
adding replicas never compounds); a Value metric proposes ceil(current * value / target). A
proposal within the tolerance of the target keeps the current count. The largest proposal wins,
then the stabilization windows (scale up to the lowest, down to the highest recommendation seen
in each window), the rate policies and finally min/max apply. Missing metrics never shrink the
pool, and it only goes to zero after the scale-to-zero idle period of observed zero activity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

from operators.autoscaler.spec import MetricSpec, PolicyKind, ScalingRules, ScalingSpec, SelectPolicy, TargetType

_EPSILON = 1e-9  # keeps ceil(4.0000000001) at 4 when the ratio is exact


class Limit(StrEnum):
    NONE = ""
    MIN_REPLICAS = "TooFewReplicas"
    MAX_REPLICAS = "TooManyReplicas"
    SCALE_UP_RATE = "ScaleUpLimit"
    SCALE_DOWN_RATE = "ScaleDownLimit"


@dataclass(frozen=True, slots=True)
class Observation:
    current_replicas: int
    values: tuple[float | None, ...]  # one per spec.metrics; None when Prometheus gave nothing
    activity: float | None = None  # requests in flight in the pool (for scale to zero)


@dataclass(frozen=True, slots=True)
class Recommendation:
    time_s: float
    replicas: int


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    time_s: float
    delta: int  # signed change of replicas


@dataclass(frozen=True, slots=True)
class History:
    recommendations: tuple[Recommendation, ...] = ()
    events: tuple[ScaleEvent, ...] = ()
    seed: Recommendation | None = None  # the count at the first observation; holds scale-down for a window
    idle_since_s: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    current_replicas: int
    desired_replicas: int
    proposals: tuple[int | None, ...]  # per metric, after the tolerance
    is_metrics_available: bool  # every metric had a value
    limited_by: Limit
    reason: str
    history: History

    @property
    def delta(self) -> int:
        return self.desired_replicas - self.current_replicas


def propose(metric: MetricSpec, value: float | None, current: int, tolerance: float) -> int | None:
    """Replicas one metric asks for, or None when its value is missing."""
    if value is None or not math.isfinite(value) or value < 0 or current <= 0:
        return None
    if metric.target_type is TargetType.AVERAGE_VALUE:
        ratio = value / (metric.target * current)
    else:
        ratio = value / metric.target
    if abs(ratio - 1.0) <= tolerance:
        return current
    return max(0, math.ceil(ratio * current - _EPSILON))


def decide(spec: ScalingSpec, obs: Observation, history: History, now_s: float) -> Decision:
    """Desired replicas for the pool, and the history to keep for the next call."""
    history = _track_idle(spec, obs, history, now_s)
    if obs.current_replicas <= 0:
        return _decide_at_zero(spec, obs, history, now_s)
    values = (*obs.values, *(None,) * len(spec.metrics))[: len(spec.metrics)]  # a short tuple counts as missing
    proposals = tuple(
        propose(m, v, obs.current_replicas, spec.tolerance) for m, v in zip(spec.metrics, values, strict=True)
    )
    is_available = all(p is not None for p in proposals)
    if _is_idle_long_enough(spec, history, now_s):
        return _finish(spec, obs, history, now_s, 0, proposals, is_available, Limit.NONE, "idle: scaling to zero")
    valid = [p for p in proposals if p is not None]
    if not valid:
        held, limit = _clamp(spec, obs.current_replicas)
        return _finish(spec, obs, history, now_s, held, proposals, False, limit, "metrics unavailable: holding")
    raw = max(valid)
    if not is_available:
        raw = max(raw, obs.current_replicas)  # a partial view may grow the pool, never shrink it
    history = _record(spec, history, Recommendation(now_s, raw), obs.current_replicas)
    stabilized = _stabilize(spec, history, obs.current_replicas, now_s)
    desired, limit = _limit(spec, history.events, obs.current_replicas, stabilized, now_s)
    reason = _explain(spec, proposals, raw, stabilized, desired)
    return _finish(spec, obs, history, now_s, desired, proposals, is_available, limit, reason)


def _decide_at_zero(spec: ScalingSpec, obs: Observation, history: History, now_s: float) -> Decision:
    """At zero no worker exports metrics: only the activation signal can wake the pool."""
    count = len(spec.metrics)
    is_active = obs.activity is not None and obs.activity > 0
    if spec.scale_to_zero is not None and is_active:
        woken = History(events=(ScaleEvent(now_s, spec.min_replicas),))  # a fresh window after waking
        return Decision(0, spec.min_replicas, (None,) * count, False, Limit.NONE, "activated from zero", woken)
    return Decision(0, 0, (None,) * count, False, Limit.NONE, "at zero: waiting for activity", history)


def _finish(
    spec: ScalingSpec,
    obs: Observation,
    history: History,
    now_s: float,
    desired: int,
    proposals: tuple[int | None, ...],
    is_available: bool,
    limit: Limit,
    reason: str,
) -> Decision:
    delta = desired - obs.current_replicas
    if delta:
        history = replace(history, events=(*history.events, ScaleEvent(now_s, delta)))
    history = _prune(spec, history, now_s)
    return Decision(obs.current_replicas, desired, proposals, is_available, limit, reason, history)


def _track_idle(spec: ScalingSpec, obs: Observation, history: History, now_s: float) -> History:
    if spec.scale_to_zero is None or obs.activity is None or obs.activity > 0:
        return replace(history, idle_since_s=None) if history.idle_since_s is not None else history
    if history.idle_since_s is None:
        return replace(history, idle_since_s=now_s)
    return history


def _is_idle_long_enough(spec: ScalingSpec, history: History, now_s: float) -> bool:
    if spec.scale_to_zero is None or history.idle_since_s is None:
        return False
    return now_s - history.idle_since_s >= spec.scale_to_zero.idle_s


def _record(spec: ScalingSpec, history: History, rec: Recommendation, current: int) -> History:
    seed = history.seed if history.seed is not None else Recommendation(rec.time_s, current)
    return replace(history, recommendations=(*history.recommendations, rec), seed=seed)


def _stabilize(spec: ScalingSpec, history: History, current: int, now_s: float) -> int:
    """Scale up to the lowest recommendation of the up window, down to the highest of the down window."""
    latest = history.recommendations[-1].replicas
    up_floor = now_s - spec.scale_up.stabilization_window_s
    down_floor = now_s - spec.scale_down.stabilization_window_s
    up = min([latest] + [r.replicas for r in history.recommendations if r.time_s >= up_floor])
    down = max([latest] + [r.replicas for r in history.recommendations if r.time_s >= down_floor])
    if history.seed is not None and history.seed.time_s >= down_floor:
        down = max(down, history.seed.replicas)
    return up if up > current else down if down < current else current


def _limit(
    spec: ScalingSpec, events: tuple[ScaleEvent, ...], current: int, desired: int, now_s: float
) -> tuple[int, Limit]:
    limit = Limit.NONE
    if desired > current:
        ceiling = min(spec.max_replicas, max(current, _scale_up_limit(spec.scale_up, events, current, now_s)))
        if desired > ceiling:
            desired, limit = ceiling, Limit.MAX_REPLICAS if ceiling == spec.max_replicas else Limit.SCALE_UP_RATE
    elif desired < current:
        floor = max(spec.min_replicas, min(current, _scale_down_limit(spec.scale_down, events, current, now_s)))
        if desired < floor:
            desired, limit = floor, Limit.MIN_REPLICAS if floor == spec.min_replicas else Limit.SCALE_DOWN_RATE
    clamped, bound = _clamp(spec, desired)
    return clamped, bound if bound is not Limit.NONE else limit


def _clamp(spec: ScalingSpec, replicas: int) -> tuple[int, Limit]:
    """min/max win over everything else, as in HPA (which applies them even without metrics)."""
    if replicas > spec.max_replicas:
        return spec.max_replicas, Limit.MAX_REPLICAS
    if replicas < spec.min_replicas:
        return spec.min_replicas, Limit.MIN_REPLICAS
    return replicas, Limit.NONE


def _period_start(events: tuple[ScaleEvent, ...], current: int, period_s: float, now_s: float) -> int:
    """Replicas at the start of the policy period: current minus what the period added, plus what it removed."""
    change = sum(e.delta for e in events if e.time_s > now_s - period_s)
    return current - change


def _scale_up_limit(rules: ScalingRules, events: tuple[ScaleEvent, ...], current: int, now_s: float) -> int:
    if rules.select is SelectPolicy.DISABLED or not rules.policies:
        return current
    proposals = []
    for policy in rules.policies:
        start = _period_start(events, current, policy.period_s, now_s)
        if policy.kind is PolicyKind.PODS:
            proposals.append(start + policy.value)
        else:
            proposals.append(math.ceil(start * (1 + policy.value / 100) - _EPSILON))
    return max(proposals) if rules.select is SelectPolicy.MAX else min(proposals)


def _scale_down_limit(rules: ScalingRules, events: tuple[ScaleEvent, ...], current: int, now_s: float) -> int:
    if rules.select is SelectPolicy.DISABLED or not rules.policies:
        return current
    proposals = []
    for policy in rules.policies:
        start = _period_start(events, current, policy.period_s, now_s)
        if policy.kind is PolicyKind.PODS:
            proposals.append(start - policy.value)
        else:
            proposals.append(math.floor(start * (1 - policy.value / 100) + _EPSILON))
    return min(proposals) if rules.select is SelectPolicy.MAX else max(proposals)


def _prune(spec: ScalingSpec, history: History, now_s: float) -> History:
    keep_rec_s = max(spec.scale_up.stabilization_window_s, spec.scale_down.stabilization_window_s)
    periods = [p.period_s for p in (*spec.scale_up.policies, *spec.scale_down.policies)]
    keep_event_s = max(periods, default=0.0)
    return replace(
        history,
        recommendations=tuple(r for r in history.recommendations if r.time_s >= now_s - keep_rec_s),
        events=tuple(e for e in history.events if e.time_s > now_s - keep_event_s),
    )


def _explain(spec: ScalingSpec, proposals: tuple[int | None, ...], raw: int, stabilized: int, desired: int) -> str:
    named = ", ".join(f"{m.name}={p}" for m, p in zip(spec.metrics, proposals, strict=True) if p is not None)
    text = f"proposals {named or 'none'}; recommended {raw}"
    if stabilized != raw:
        text += f", stabilized to {stabilized}"
    if desired != stabilized:
        text += f", limited to {desired}"
    return text


def hold(spec: ScalingSpec, current: int, history: History, reason: str) -> Decision:
    """Keep the current count (autoscaling disabled); the history is left as it was."""
    return Decision(current, current, (None,) * len(spec.metrics), False, Limit.NONE, reason, history)
