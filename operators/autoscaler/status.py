"""The MiMoPool status written after each evaluation: replicas, metric readings and conditions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from operators.autoscaler.scaling import Decision, Limit
from operators.autoscaler.spec import PoolSpec, ScalingSpec, TargetType


@dataclass(frozen=True, slots=True)
class Readings:
    """What Prometheus said for one pool: one value per metric, the activity, and what went wrong."""

    values: tuple[float | None, ...]
    activity: float | None
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Tick:
    """One evaluation of one pool, everything the status and the events are written from."""

    pool: PoolSpec
    decision: Decision
    readings: Readings
    observed_replicas: int  # the Deployment's status.replicas
    ready_replicas: int


def metric_readings(pool: PoolSpec, tick: Tick) -> list[dict[str, Any]]:
    """Each metric's value as compared with its target (per replica for AverageValue)."""
    out: list[dict[str, Any]] = []
    current = max(tick.decision.current_replicas, 1)
    for metric, value, proposal in zip(
        pool.scaling.metrics, tick.readings.values, tick.decision.proposals, strict=False
    ):
        entry: dict[str, Any] = {"name": metric.name, "type": metric.kind.value, "target": metric.target}
        entry["targetType"] = metric.target_type.value
        if value is not None:
            shown = value / current if metric.target_type is TargetType.AVERAGE_VALUE else value
            entry["value"] = round(shown, 4)
        entry["proposedReplicas"] = proposal
        out.append(entry)
    return out


def conditions(tick: Tick) -> list[Condition]:
    decision, scaling = tick.decision, tick.pool.scaling
    is_missing = bool(tick.readings.errors)
    has_metric = any(p is not None for p in decision.proposals) or decision.current_replicas == 0
    ready = tick.ready_replicas
    return [
        Condition(
            "Ready",
            ready > 0,
            "WorkersReady" if ready > 0 else "ScaledToZero" if decision.desired_replicas == 0 else "NoReadyWorkers",
            f"{ready}/{decision.desired_replicas} workers ready",
        ),
        Condition(
            "ScalingActive",
            scaling.is_enabled and not scaling.is_external and has_metric,
            _scaling_reason(scaling, has_metric),
            decision.reason,
        ),
        Condition(
            "ScalingLimited",
            decision.limited_by is not Limit.NONE,
            decision.limited_by.value or "DesiredWithinRange",
            f"desired {decision.desired_replicas}, range [{scaling.min_replicas}, {scaling.max_replicas}]",
        ),
        Condition(
            "MetricsUnavailable",
            is_missing,
            "QueryFailed" if is_missing else "AllMetricsAvailable",
            "; ".join(tick.readings.errors),
        ),
    ]


def merge_conditions(old: Sequence[Mapping[str, Any]], new: Sequence[Condition], now_iso: str) -> list[dict[str, Any]]:
    """Kubernetes-style conditions; lastTransitionTime moves only when the status flips."""
    previous = {c.get("type"): c for c in old if isinstance(c, Mapping)}
    merged = []
    for cond in new:
        status = "True" if cond.status else "False"
        before = previous.get(cond.type, {})
        since = before.get("lastTransitionTime") if before.get("status") == status else None
        merged.append(
            {
                "type": cond.type,
                "status": status,
                "reason": cond.reason,
                "message": cond.message,
                "lastTransitionTime": since or now_iso,
            }
        )
    return merged


def build_status(tick: Tick, selector: str, old: Mapping[str, Any], now_iso: str) -> dict[str, Any]:
    """The whole status after a tick; equal to `old` (and so not written) when nothing changed."""
    status = {
        "replicas": tick.observed_replicas,  # the Deployment's pods (the scale subresource's statusReplicasPath)
        "readyReplicas": tick.ready_replicas,
        "currentReplicas": tick.decision.current_replicas,  # spec.replicas when evaluated
        "desiredReplicas": tick.decision.desired_replicas,
        "selector": selector,
        "metrics": metric_readings(tick.pool, tick),
        "conditions": merge_conditions(old.get("conditions") or [], conditions(tick), now_iso),
    }
    last_scale = now_iso if tick.decision.delta else old.get("lastScaleTime")
    if last_scale:
        status["lastScaleTime"] = last_scale
    return status


def changed_fields(new: Mapping[str, Any], old: Mapping[str, Any]) -> dict[str, Any]:
    """Only the top-level status fields that differ, to keep watch events rare."""
    return {key: value for key, value in new.items() if old.get(key) != value}


def _scaling_reason(scaling: ScalingSpec, has_metric: bool) -> str:
    if scaling.is_external:
        return "ExternalScaler"  # KEDA or an HPA writes spec.replicas
    if not scaling.is_enabled:
        return "ScalingDisabled"
    return "ValidMetricFound" if has_metric else "MetricsUnavailable"
