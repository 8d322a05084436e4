"""The worker Deployment and Service of a pool, as plain Kubernetes manifests."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from operators.autoscaler.spec import Engine, PoolSpec

POOL_LABEL = "serve.mimo.dev/pool"
GRPC_PORT = 31000
METRICS_PORT = 9100
WORKER_CONTAINER = "worker"


def selector_labels(pool: PoolSpec) -> dict[str, str]:
    return {POOL_LABEL: pool.name}


def label_selector(pool: PoolSpec) -> str:
    """The selector string written to status.selector (the scale subresource's labelSelectorPath)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(pool).items()))


def pool_labels(pool: PoolSpec) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "mimo-worker",
        "app.kubernetes.io/instance": pool.name,
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": "mimo-autoscaler",
        **selector_labels(pool),
    }


def worker_args(pool: PoolSpec) -> list[str]:
    work = pool.workload
    args = ["worker", "--listen", f"0.0.0.0:{GRPC_PORT}", "--metrics-port", str(METRICS_PORT)]
    args += ["--engine", work.engine.value, "--model", work.model]
    if not work.is_mtp_enabled:
        args.append("--no-mtp")
    if work.engine is Engine.TORCH and work.gpus_per_replica > 0:
        args += ["--device", "cuda"]
    return args


def worker_container(pool: PoolSpec) -> dict[str, Any]:
    work = pool.workload
    resources = copy.deepcopy(dict(work.resources))
    if work.gpus_per_replica > 0:
        resources.setdefault("limits", {})["nvidia.com/gpu"] = work.gpus_per_replica
    return {
        "name": WORKER_CONTAINER,
        "image": work.image,
        "command": ["mimo-serve"],
        "args": worker_args(pool),
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"grpc": {"port": GRPC_PORT}, "periodSeconds": 5},
        "resources": resources,
    }


def pod_template(pool: PoolSpec) -> dict[str, Any]:
    work = pool.workload
    pod_spec: dict[str, Any] = {"containers": [worker_container(pool)], "terminationGracePeriodSeconds": 60}
    if work.node_selector:
        pod_spec["nodeSelector"] = dict(work.node_selector)
    if work.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in work.tolerations]
    generated = {"metadata": {"labels": pool_labels(pool)}, "spec": pod_spec}
    return merge_override(generated, work.template)


def deployment(pool: PoolSpec, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": pool.name, "namespace": pool.namespace, "labels": pool_labels(pool)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels(pool)},
            "template": pod_template(pool),
        },
    }


def service(pool: PoolSpec) -> dict[str, Any]:
    """A headless Service: the router discovers and balances over the worker pods itself."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": pool.name, "namespace": pool.namespace, "labels": pool_labels(pool)},
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(pool),
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def owner_reference(pool: PoolSpec, api_version: str, kind: str) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": pool.name,
        "uid": pool.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def merge_override(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge a user's pod template over ours: dicts merge, lists of named items merge by name."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = merge_override(current, value)
        elif isinstance(current, list) and _is_named_list(current) and _is_named_list(value):
            merged[key] = _merge_named(current, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _is_named_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, Mapping) and "name" in v for v in value)


def _merge_named(base: list[Mapping[str, Any]], override: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    by_name = {item["name"]: dict(item) for item in base}
    for item in override:
        name = item["name"]
        by_name[name] = merge_override(by_name[name], item) if name in by_name else copy.deepcopy(dict(item))
    return list(by_name.values())
