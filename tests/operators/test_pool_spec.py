"""Parsing a MiMoPool into PoolSpec: defaults, overrides, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest

from operators.autoscaler.spec import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    Engine,
    MetricKind,
    PolicyKind,
    SelectPolicy,
    SpecError,
    TargetType,
    parse_pool,
)


def body(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": {"model": "/m", "maxReplicas": 4, **spec}}


def test_minimal_pool_gets_the_defaults() -> None:
    pool = parse_pool(body())
    assert (pool.name, pool.namespace, pool.uid, pool.replicas) == ("p", "ns", "u", None)
    assert pool.workload.engine is Engine.SGLANG and pool.workload.is_mtp_enabled
    assert pool.workload.gpus_per_replica == 1
    scaling = pool.scaling
    assert (scaling.min_replicas, scaling.max_replicas, scaling.tolerance) == (1, 4, 0.1)
    assert scaling.scale_up == DEFAULT_SCALE_UP and scaling.scale_down == DEFAULT_SCALE_DOWN
    assert [m.kind for m in scaling.metrics] == [MetricKind.WAITING_REQUESTS]
    assert scaling.scale_to_zero is None


def test_full_pool() -> None:
    pool = parse_pool(
        body(
            engine="torch",
            mtp=False,
            replicas=3,
            minReplicas=2,
            gpusPerReplica=2,
            nodeSelector={"gpu": "h200"},
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}],
            prometheusUrl="http://prom:9090",
            autoscaling={
                "tolerance": 0.2,
                "metrics": [
                    {"type": "KVCacheUsage", "target": 0.8},
                    {"type": "TimeToFirstTokenP90", "target": 1.5, "window": "30s"},
                    {"type": "PromQL", "query": "sum(x)", "target": 10, "name": "queue"},
                ],
                "behavior": {
                    "scaleUp": {
                        "stabilizationWindowSeconds": 10,
                        "policies": [{"type": "Pods", "value": 2, "periodSeconds": 30}],
                    },
                    "scaleDown": {"selectPolicy": "Min"},
                },
                "scaleToZero": {"idleSeconds": 600, "activationQuery": "sum(router_queue)"},
            },
        )
    )
    assert pool.replicas == 3 and pool.workload.engine is Engine.TORCH and not pool.workload.is_mtp_enabled
    assert pool.workload.node_selector == {"gpu": "h200"} and pool.prometheus_url == "http://prom:9090"
    kv, ttft, custom = pool.scaling.metrics
    assert kv.target_type is TargetType.VALUE and ttft.rate_window == "30s"
    assert custom.target_type is TargetType.AVERAGE_VALUE and custom.name == "queue" and custom.query == "sum(x)"
    assert pool.scaling.scale_up.stabilization_window_s == 10.0
    assert pool.scaling.scale_up.policies[0].kind is PolicyKind.PODS
    assert pool.scaling.scale_down.select is SelectPolicy.MIN
    assert pool.scaling.scale_down.policies == DEFAULT_SCALE_DOWN.policies
    assert pool.scaling.scale_to_zero is not None and pool.scaling.scale_to_zero.idle_s == 600.0


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"model": ""}, "spec.model"),
        ({"engine": "vllm"}, "spec.engine"),
        ({"minReplicas": 5}, "spec.maxReplicas"),
        ({"minReplicas": 0}, "spec.minReplicas"),
        ({"gpusPerReplica": 1.5}, "spec.gpusPerReplica"),
        ({"autoscaling": {"metrics": [{"type": "PromQL", "target": 1}]}}, "metrics[0].query"),
        ({"autoscaling": {"metrics": [{"type": "WaitingRequests", "target": 0}]}}, "metrics[0].target"),
        ({"autoscaling": {"metrics": [{"type": "Nope", "target": 1}]}}, "metrics[0].type"),
        ({"autoscaling": {"tolerance": "x"}}, "tolerance"),
        (
            {
                "autoscaling": {
                    "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 1}]}}
                }
            },
            "scaleUp.policies[0].value",
        ),
    ],
)
def test_invalid_specs_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_pool(body(**spec))
