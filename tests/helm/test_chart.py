"""The chart renders, lints and validates for every scenario, and its values schema refuses bad values."""

from __future__ import annotations

import json
from typing import Any

import helm_python
import pytest
import yaml

from tests.support.chart import (
    CHART,
    REPO,
    SCENARIOS,
    Manifest,
    deep_merge,
    find,
    one,
    render,
    scenario_values,
    validation_errors,
)

MONITORING_ON = {"monitoring": {"serviceMonitors": {"enabled": True}, "prometheusRule": {"enabled": True}}}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scenario_lints_renders_and_every_manifest_validates(scenario: str) -> None:
    values = deep_merge(scenario_values(scenario), MONITORING_ON)
    report = helm_python.lint(CHART, values, strict=True, kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 1 is info ("icon is recommended")
    assert not problems and not report["errors"], problems
    manifests = render(values)
    assert not list(validation_errors(manifests))
    kinds = {m.kind for m in manifests}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule", "ConfigMap"} <= kinds
    workers = "Deployment" if scenario == "operator-disabled" else "MiMoPool"
    assert find(manifests, workers, "mimo-serve-workers")


def test_the_validator_catches_what_the_api_server_would_refuse() -> None:
    manifests = render()
    pool, router = one(manifests, "MiMoPool"), one(manifests, "Deployment", "mimo-serve-router")
    broken_pool = deep_merge(pool, {"spec": {"maxReplica": 3}})  # a typo the API server would prune
    broken_router = deep_merge(router, {"spec": {"replicas": "three"}})
    errors = list(validation_errors([Manifest("x", broken_pool), Manifest("y", broken_router)]))
    assert len(errors) == 3, errors  # the pool once, the router for each Kubernetes version
    assert "maxReplica" in errors[0] and "replicas" in errors[1]


def test_crds_are_the_operators_own() -> None:
    shipped = (CHART / "crds" / "mimopools.serve.mimo.dev.yaml").read_bytes()
    assert shipped == (REPO / "operators" / "autoscaler" / "crd.yaml").read_bytes(), (
        "helm/mimo-serve/crds/ drifted: cp operators/autoscaler/crd.yaml helm/mimo-serve/crds/mimopools.serve.mimo.dev.yaml"
    )
    peering = [d for d in yaml.safe_load_all((REPO / "operators/autoscaler/peering.yaml").read_text()) if d]
    ours = list(yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text()))
    assert ours == [d for d in peering if d["kind"] == "CustomResourceDefinition"]


BAD_VALUES = [
    ({"router": {"replicas": "three"}}, "/router/replicas"),
    ({"routr": {"replicas": 2}}, "routr"),
    ({"workers": {"engine": "vllm"}}, "/workers/engine"),
    (
        {"workers": {"autoscaling": {"metrics": [{"type": "QueueLength", "target": 4}]}}},
        "/workers/autoscaling/metrics/0/type",
    ),
    (
        {"workers": {"autoscaling": {"metrics": [{"type": "WaitingRequests", "target": 0}]}}},
        "/workers/autoscaling/metrics/0/target",
    ),
    ({"workers": {"autoscaling": {"metrics": [{"type": "PromQL", "target": 3}]}}}, "query"),
    ({"workers": {"minReplicas": 0}}, "/workers/minReplicas"),
    ({"workers": {"probes": {"startup": {"periodSeconds": 0}}}}, "/workers/probes/startup/periodSeconds"),
    ({"model": {"cache": {"type": "s3"}}}, "/model/cache/type"),
    ({"model": {"path": "models/relative"}}, "/model/path"),
    ({"router": {"resources": {"requests": {"cpu": "lots"}}}}, "/router/resources/requests/cpu"),
    ({"monitoring": {"serviceMonitors": {"enabled": "yes"}}}, "/monitoring/serviceMonitors/enabled"),
    ({"operator": {"prometheusUrl": "prometheus:9090"}}, "/operator/prometheusUrl"),
    ({"verifier": {"sandbox": {"seccompProfile": {"type": "Privileged"}}}}, "/verifier/sandbox/seccompProfile/type"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_the_schema_refuses_bad_values_naming_the_field(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=where):
        render(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"workers": {"minReplicas": 3, "maxReplicas": 2}}, "maxReplicas .2. is below workers.minReplicas .3."),
        ({"workers": {"engine": "sglang", "gpusPerReplica": 0}}, "sglang needs workers.gpusPerReplica"),
        ({"operator": {"replicas": 2, "peering": {"enabled": False}}}, "needs operator.peering.enabled"),
        ({"model": {"cache": {"type": "none"}, "download": {"enabled": True}}}, "model.download needs a model.cache"),
    ],
)
def test_inconsistent_values_fail_with_a_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=message):
        render(values)


def test_every_default_value_is_documented_and_in_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    text = (CHART / "values.yaml").read_text()

    def walk(values: dict[str, Any], node: dict[str, Any], path: str) -> None:
        for key, value in values.items():
            assert key in node.get("properties", {}), f"{path}{key} is not in values.schema.json"
            child = node["properties"][key]
            if isinstance(value, dict) and "properties" in child:
                walk(value, child, f"{path}{key}.")

    walk(yaml.safe_load(text), schema, "")
    top = [line.split(":")[0] for line in text.splitlines() if line and line[0].isalpha()]
    lines = text.splitlines()
    for key in top:  # every top-level block starts with a comment saying what it is
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
        assert lines[index - 1].startswith("#"), f"values.yaml: {key} has no comment"


def test_monitoring_objects_follow_the_cluster_and_the_switches() -> None:
    # Offline rendering serves no monitoring.coreos.com/v1, so "auto" leaves them out; true forces them.
    assert not find(render(), "ServiceMonitor") and not find(render(), "PrometheusRule")
    forced = render(MONITORING_ON)
    monitors = {m.name: m.body for m in find(forced, "ServiceMonitor")}
    assert set(monitors) == {f"mimo-serve-{p}" for p in ("router", "tokenizer", "verifier", "operator", "worker")}
    worker = monitors["mimo-serve-worker"]["spec"]["endpoints"][0]["relabelings"]
    assert {"action": "replace", "targetLabel": "job", "replacement": "mimo-worker"} in worker
    assert any(r.get("targetLabel") == "pool" for r in worker)
    assert monitors["mimo-serve-operator"]["spec"]["endpoints"][0]["honorLabels"] is True
    off = render({"monitoring": {"serviceMonitors": {"enabled": False}, "dashboards": {"enabled": False}}})
    assert not find(off, "ServiceMonitor") and not find(off, "ConfigMap")


def test_dashboards_are_configmaps_for_the_grafana_sidecar() -> None:
    maps = find(render({"monitoring": {"dashboards": {"annotations": {"grafana_folder": "MiMo"}}}}), "ConfigMap")
    names = {m.name for m in maps}
    assert names == {f"mimo-serve-dashboard-{d}" for d in ("overview", "workers", "rollouts", "autoscaler")}
    for m in maps:
        assert m.body["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert m.body["metadata"]["annotations"] == {"grafana_folder": "MiMo"}
        ((key, text),) = m.body["data"].items()
        name = m.name.removeprefix("mimo-serve-dashboard-")
        assert json.loads(text) == json.loads((CHART / "dashboards" / f"{name}.json").read_text())
        assert key == f"mimo-serve-{name}.json"
