"""workers.autoscaling.mode keda | hpa: a KEDA ScaledObject or an autoscaling/v2 HPA on the pool's /scale.

Rendered with Helm's Go SDK and validated as tests/support/chart.py does: the HPA against Kubernetes'
own schemas (kubernetes-validate), the ScaledObject against KEDA's CRD schema (tests/helm/data, vendored:
the file says from where). The operator's side (it leaves replicas alone) is tests/operators/test_operator.py.
"""

from __future__ import annotations

from typing import Any

import helm_python
import pytest

from operators.autoscaler import promql
from operators.autoscaler.spec import Scaler, parse_pool
from tests.support.chart import CHART, Manifest, deep_merge, find, one, render, validation_errors

POOL = "mimo-serve-workers"
METRICS = [
    {"type": "WaitingRequests", "target": 4},
    {"type": "KVCacheUsage", "target": 0.8},
    {"type": "TimeToFirstTokenP90", "target": 2, "window": "2m"},
]


def values(mode: str, operator: bool = True, **autoscaling: Any) -> dict[str, Any]:
    auto = {"mode": mode, "metrics": METRICS, **autoscaling}
    return {"workers": {"autoscaling": auto}, "operator": {"enabled": operator}}


@pytest.mark.parametrize("operator", [True, False], ids=["operator", "operator-disabled"])
@pytest.mark.parametrize("mode", ["keda", "hpa"])
def test_the_chart_lints_renders_and_validates_with_another_scaler(mode: str, operator: bool) -> None:
    vals = values(mode, operator)
    report = helm_python.lint(CHART, vals, strict=True, kube_version="v1.30.0")
    assert not report["errors"] and not [m for m in report["messages"] if m["severity"] >= 2]
    manifests = render(vals)
    assert not list(validation_errors(manifests))
    kind = "ScaledObject" if mode == "keda" else "HorizontalPodAutoscaler"
    scaler = one(manifests, kind, POOL)
    assert not find(manifests, "HorizontalPodAutoscaler" if mode == "keda" else "ScaledObject")
    target = scaler["spec"]["scaleTargetRef"]
    if operator:
        assert target == {"apiVersion": "serve.mimo.dev/v1alpha1", "kind": "MiMoPool", "name": POOL}
        pool = parse_pool({**one(manifests, "MiMoPool", POOL), "metadata": {"name": POOL, "namespace": "mimo"}})
        assert pool.scaling.scaler is Scaler(mode) and pool.scaling.is_external
    else:  # the plain Deployment has a /scale too; helm no longer writes its replicas
        assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": POOL}
        assert "replicas" not in one(manifests, "Deployment", POOL)["spec"]


def test_keda_triggers_are_the_operators_own_queries() -> None:
    manifests = render(values("keda", scaleToZero={"idleSeconds": 900}))
    body = one(manifests, "MiMoPool", POOL)
    pool = parse_pool({**body, "metadata": {"name": POOL, "namespace": "mimo"}})
    spec = one(manifests, "ScaledObject", POOL)["spec"]
    *metric_triggers, activity = spec["triggers"]
    assert [t["metadata"]["query"] for t in metric_triggers] == [
        promql.metric_query(pool, m) for m in pool.scaling.metrics
    ]
    assert [t["metadata"]["threshold"] for t in metric_triggers] == ["4", "0.8", "2"]
    assert [t["metricType"] for t in metric_triggers] == ["AverageValue", "Value", "Value"]
    assert activity["metadata"]["query"] == promql.activity_query(pool)
    assert activity["metadata"]["activationThreshold"] == "0"
    assert spec["minReplicaCount"] == 0 and spec["cooldownPeriod"] == 900 and spec["maxReplicaCount"] == 4
    assert {t["metadata"]["serverAddress"] for t in spec["triggers"]} == {
        "http://prometheus-operated.monitoring.svc:9090"
    }


def test_the_hpa_names_one_external_metric_per_operator_metric() -> None:
    spec = one(render(values("hpa")), "HorizontalPodAutoscaler", POOL)["spec"]
    names = [m["external"]["metric"]["name"] for m in spec["metrics"]]
    assert names == ["mimo_pool_waiting_requests", "mimo_pool_kv_usage_ratio", "mimo_pool_ttft_p90_seconds"]
    assert [m["external"]["target"] for m in spec["metrics"]] == [
        {"type": "AverageValue", "averageValue": "4"},
        {"type": "Value", "value": "0.8"},
        {"type": "Value", "value": "2"},
    ]
    assert spec["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 300}}


def test_operator_mode_renders_no_other_scaler() -> None:
    manifests = render()
    assert not find(manifests, "ScaledObject") and not find(manifests, "HorizontalPodAutoscaler")
    assert one(manifests, "MiMoPool", POOL)["spec"]["autoscaling"]["scaler"] == "operator"


def test_the_keda_schema_catches_what_the_api_server_would_refuse() -> None:
    scaled = one(render(values("keda")), "ScaledObject", POOL)
    broken = deep_merge(scaled, {"spec": {"minReplicas": 1, "pollingInterval": "15s"}})  # HPA's name; a string
    errors = list(validation_errors([Manifest("x", broken)]))
    assert len(errors) == 2 and any("minReplicas" in e for e in errors) and any("pollingInterval" in e for e in errors)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"metrics": [{"type": "PromQL", "query": "sum(up)", "target": 1}]}, r"metrics\[0\]: a PromQL metric cannot"),
        ({"scaleToZero": {"idleSeconds": 600}}, "scaleToZero needs autoscaling.mode operator or keda"),
    ],
)
def test_what_an_hpa_cannot_do_fails_with_a_message(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=message):
        render(values("hpa", **extra))


def test_the_schema_refuses_an_unknown_mode() -> None:
    with pytest.raises(helm_python.HelmValuesError, match="/workers/autoscaling/mode"):
        render(values("vpa"))
