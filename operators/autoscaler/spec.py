"""The MiMoPool spec, parsed once from the custom resource into frozen dataclasses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

GROUP = "serve.mimo.dev"
VERSION = "v1alpha1"
PLURAL = "mimopools"
KIND = "MiMoPool"

DEFAULT_IMAGE = "ghcr.io/mimo-serve/mimo-serve:latest"
DEFAULT_TOLERANCE = 0.1
DEFAULT_SCALE_UP_WINDOW_S = 0.0
DEFAULT_SCALE_DOWN_WINDOW_S = 60.0
DEFAULT_POLICY_PERIOD_S = 15.0
DEFAULT_WAITING_TARGET = 4.0
DEFAULT_RATE_WINDOW = "1m"

E = TypeVar("E", bound=StrEnum)


class SpecError(ValueError):
    """The MiMoPool spec cannot be served as written (the message names the field)."""


class Engine(StrEnum):
    SGLANG = "sglang"
    TORCH = "torch"
    SIM = "sim"


class Scaler(StrEnum):
    """Who writes the pool's replicas: the operator, or a KEDA ScaledObject / an HPA on its /scale subresource."""

    OPERATOR = "operator"
    KEDA = "keda"
    HPA = "hpa"


class MetricKind(StrEnum):
    WAITING_REQUESTS = "WaitingRequests"
    KV_CACHE_USAGE = "KVCacheUsage"
    TTFT_P90 = "TimeToFirstTokenP90"
    PROMQL = "PromQL"


class TargetType(StrEnum):
    AVERAGE_VALUE = "AverageValue"  # the query returns a pool total; the target is per replica
    VALUE = "Value"  # the query returns one pool-wide value (an average, a quantile)


class PolicyKind(StrEnum):
    PODS = "Pods"
    PERCENT = "Percent"


class SelectPolicy(StrEnum):
    MAX = "Max"  # the policy allowing the largest change wins
    MIN = "Min"
    DISABLED = "Disabled"


# The natural target type of each built-in metric.
BUILTIN_TARGET_TYPES = {
    MetricKind.WAITING_REQUESTS: TargetType.AVERAGE_VALUE,
    MetricKind.KV_CACHE_USAGE: TargetType.VALUE,
    MetricKind.TTFT_P90: TargetType.VALUE,
}


@dataclass(frozen=True, slots=True)
class MetricSpec:
    kind: MetricKind
    target: float
    target_type: TargetType
    name: str
    query: str = ""  # only for PromQL
    rate_window: str = DEFAULT_RATE_WINDOW  # range of rate() for the TTFT histogram


@dataclass(frozen=True, slots=True)
class RatePolicy:
    kind: PolicyKind
    value: int
    period_s: float


@dataclass(frozen=True, slots=True)
class ScalingRules:
    """One direction's behaviour, as in HPA's `behavior.scaleUp` / `behavior.scaleDown`."""

    stabilization_window_s: float
    policies: tuple[RatePolicy, ...]
    select: SelectPolicy = SelectPolicy.MAX


DEFAULT_SCALE_UP = ScalingRules(
    DEFAULT_SCALE_UP_WINDOW_S,
    (
        RatePolicy(PolicyKind.PERCENT, 100, DEFAULT_POLICY_PERIOD_S),
        RatePolicy(PolicyKind.PODS, 4, DEFAULT_POLICY_PERIOD_S),
    ),
)
DEFAULT_SCALE_DOWN = ScalingRules(
    DEFAULT_SCALE_DOWN_WINDOW_S, (RatePolicy(PolicyKind.PERCENT, 100, DEFAULT_POLICY_PERIOD_S),)
)


@dataclass(frozen=True, slots=True)
class ScaleToZero:
    idle_s: float
    activation_query: str = ""  # empty: the pool's own in-flight requests


@dataclass(frozen=True, slots=True)
class ScalingSpec:
    min_replicas: int
    max_replicas: int
    metrics: tuple[MetricSpec, ...]
    tolerance: float = DEFAULT_TOLERANCE
    scale_up: ScalingRules = DEFAULT_SCALE_UP
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN
    scale_to_zero: ScaleToZero | None = None
    is_enabled: bool = True
    scaler: Scaler = Scaler.OPERATOR

    @property
    def is_external(self) -> bool:
        """Another scaler owns spec.replicas: the operator only follows them (never writes them)."""
        return self.scaler is not Scaler.OPERATOR


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    model: str
    engine: Engine = Engine.SGLANG
    image: str = DEFAULT_IMAGE
    is_mtp_enabled: bool = True
    gpus_per_replica: int = 1
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    resources: Mapping[str, Any] = field(default_factory=dict)
    template: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PoolSpec:
    name: str
    namespace: str
    uid: str
    replicas: int | None  # spec.replicas, written through the scale subresource
    workload: WorkloadSpec
    scaling: ScalingSpec
    prometheus_url: str | None


def parse_pool(body: Mapping[str, Any]) -> PoolSpec:
    """Parse a MiMoPool object (as kopf hands it over) into a PoolSpec; raise SpecError if invalid."""
    meta = body.get("metadata", {})
    spec = body.get("spec", {})
    if not isinstance(spec, Mapping):
        raise SpecError("spec: must be an object")
    replicas = spec.get("replicas")
    return PoolSpec(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        uid=str(meta.get("uid", "")),
        replicas=None if replicas is None else _int(spec, "replicas", 0, minimum=0),
        workload=parse_workload(spec),
        scaling=parse_scaling(spec),
        prometheus_url=spec.get("prometheusUrl") or None,
    )


def parse_workload(spec: Mapping[str, Any]) -> WorkloadSpec:
    model = spec.get("model")
    if not isinstance(model, str) or not model:
        raise SpecError("spec.model: a model path or URI is required")
    return WorkloadSpec(
        model=model,
        engine=_enum(Engine, spec, "engine", Engine.SGLANG),
        image=str(spec.get("image") or DEFAULT_IMAGE),
        is_mtp_enabled=bool(spec.get("mtp", True)),
        gpus_per_replica=_int(spec, "gpusPerReplica", 1, minimum=0),
        node_selector={str(k): str(v) for k, v in (spec.get("nodeSelector") or {}).items()},
        tolerations=tuple(spec.get("tolerations") or ()),
        resources=dict(spec.get("resources") or {}),
        template=dict(spec.get("template") or {}),
    )


def parse_scaling(spec: Mapping[str, Any]) -> ScalingSpec:
    auto = spec.get("autoscaling") or {}
    min_replicas = _int(spec, "minReplicas", 1, minimum=1)
    max_replicas = _int(spec, "maxReplicas", max(min_replicas, 1), minimum=1)
    if max_replicas < min_replicas:
        raise SpecError(f"spec.maxReplicas: {max_replicas} is below minReplicas {min_replicas}")
    raw_metrics = auto.get("metrics") or [{"type": MetricKind.WAITING_REQUESTS.value, "target": DEFAULT_WAITING_TARGET}]
    behavior = auto.get("behavior") or {}
    return ScalingSpec(
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        metrics=tuple(parse_metric(m, i) for i, m in enumerate(raw_metrics)),
        tolerance=_float(auto, "tolerance", DEFAULT_TOLERANCE, minimum=0.0),
        scale_up=parse_rules(behavior.get("scaleUp"), DEFAULT_SCALE_UP, "scaleUp"),
        scale_down=parse_rules(behavior.get("scaleDown"), DEFAULT_SCALE_DOWN, "scaleDown"),
        scale_to_zero=parse_scale_to_zero(auto.get("scaleToZero")),
        is_enabled=bool(auto.get("enabled", True)),
        scaler=_enum(Scaler, auto, "scaler", Scaler.OPERATOR, where="spec.autoscaling"),
    )


def parse_metric(raw: Mapping[str, Any], index: int) -> MetricSpec:
    where = f"spec.autoscaling.metrics[{index}]"
    kind = _enum(MetricKind, raw, "type", None, where=where)
    target = _float(raw, "target", None, minimum=0.0, where=where)
    if target <= 0:
        raise SpecError(f"{where}.target: must be above 0")
    query = str(raw.get("query") or "")
    if kind is MetricKind.PROMQL and not query:
        raise SpecError(f"{where}.query: a PromQL metric needs a query")
    default_type = BUILTIN_TARGET_TYPES.get(kind, TargetType.AVERAGE_VALUE)
    return MetricSpec(
        kind=kind,
        target=target,
        target_type=_enum(TargetType, raw, "targetType", default_type, where=where),
        name=str(raw.get("name") or (kind.value if kind is not MetricKind.PROMQL else f"PromQL{index}")),
        query=query,
        rate_window=str(raw.get("window") or DEFAULT_RATE_WINDOW),
    )


def parse_rules(raw: Mapping[str, Any] | None, default: ScalingRules, where: str) -> ScalingRules:
    if not raw:
        return default
    where = f"spec.autoscaling.behavior.{where}"
    raw_policies = raw.get("policies")
    policies = (
        default.policies
        if raw_policies is None
        else tuple(
            RatePolicy(
                kind=_enum(PolicyKind, p, "type", None, where=f"{where}.policies[{i}]"),
                value=_int(p, "value", None, minimum=1, where=f"{where}.policies[{i}]"),
                period_s=_float(p, "periodSeconds", None, minimum=1.0, where=f"{where}.policies[{i}]"),
            )
            for i, p in enumerate(raw_policies)
        )
    )
    return ScalingRules(
        stabilization_window_s=_float(
            raw, "stabilizationWindowSeconds", default.stabilization_window_s, minimum=0.0, where=where
        ),
        policies=policies,
        select=_enum(SelectPolicy, raw, "selectPolicy", default.select, where=where),
    )


def parse_scale_to_zero(raw: Mapping[str, Any] | None) -> ScaleToZero | None:
    if not raw:
        return None
    where = "spec.autoscaling.scaleToZero"
    return ScaleToZero(
        idle_s=_float(raw, "idleSeconds", None, minimum=1.0, where=where),
        activation_query=str(raw.get("activationQuery") or ""),
    )


def _int(raw: Mapping[str, Any], key: str, default: int | None, *, minimum: int, where: str = "spec") -> int:
    value = raw.get(key, default)
    if value is None:
        raise SpecError(f"{where}.{key}: required")
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise SpecError(f"{where}.{key}: must be an integer, got {value!r}")
    if value < minimum:
        raise SpecError(f"{where}.{key}: must be at least {minimum}, got {value}")
    return int(value)


def _float(raw: Mapping[str, Any], key: str, default: float | None, *, minimum: float, where: str = "spec") -> float:
    value = raw.get(key, default)
    if value is None:
        raise SpecError(f"{where}.{key}: required")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"{where}.{key}: must be a number, got {value!r}") from None
    if number != number or number < minimum:  # NaN fails the first test
        raise SpecError(f"{where}.{key}: must be at least {minimum}, got {value}")
    return number


def _enum(cls: type[E], raw: Mapping[str, Any], key: str, default: E | None, *, where: str = "spec") -> E:
    value = raw.get(key, default)
    if value is None:
        raise SpecError(f"{where}.{key}: required, one of {[e.value for e in cls]}")
    try:
        return cls(value)
    except ValueError:
        raise SpecError(f"{where}.{key}: must be one of {[e.value for e in cls]}, got {value!r}") from None
