"""The Deployment and Service built for a pool, and the pod-template override."""

from __future__ import annotations

from typing import Any

from operators.autoscaler import resources
from operators.autoscaler.spec import parse_pool


def pool_spec(**spec: Any) -> Any:
    fields = {"model": "/models/mimo", "maxReplicas": 4, "engine": "sim", **spec}
    return parse_pool({"metadata": {"name": "chat", "namespace": "ml", "uid": "u1"}, "spec": fields})


def test_deployment_runs_the_worker_with_the_pool_settings() -> None:
    pool = pool_spec(engine="torch", mtp=False, gpusPerReplica=2, nodeSelector={"gpu": "h200"})
    dep = resources.deployment(pool, replicas=3)
    assert dep["metadata"] == {"name": "chat", "namespace": "ml", "labels": resources.pool_labels(pool)}
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["selector"] == {"matchLabels": {"serve.mimo.dev/pool": "chat"}}
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"]["serve.mimo.dev/pool"] == "chat"  # relabelled to `pool` by Prometheus
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["mimo-serve"]
    args = container["args"]
    assert args[:1] == ["worker"] and "--no-mtp" in args and args[args.index("--device") + 1] == "cuda"
    assert args[args.index("--engine") + 1] == "torch" and args[args.index("--model") + 1] == "/models/mimo"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert pod["spec"]["nodeSelector"] == {"gpu": "h200"}


def test_no_gpu_limit_for_cpu_pools() -> None:
    container = resources.worker_container(pool_spec(gpusPerReplica=0))
    assert "limits" not in container["resources"]
    assert "--no-mtp" not in container["args"]


def test_service_is_headless_over_the_pool_pods() -> None:
    svc = resources.service(pool_spec())
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == {"serve.mimo.dev/pool": "chat"}
    assert {p["name"] for p in svc["spec"]["ports"]} == {"grpc", "metrics"}


def test_template_override_merges_containers_by_name() -> None:
    override = {
        "metadata": {"annotations": {"team": "rl"}},
        "spec": {
            "containers": [
                {"name": "worker", "env": [{"name": "HF_HOME", "value": "/cache"}]},
                {"name": "sidecar", "image": "busybox"},
            ],
            "priorityClassName": "high",
        },
    }
    pod = resources.deployment(pool_spec(template=override), 1)["spec"]["template"]
    worker, sidecar = pod["spec"]["containers"]
    assert worker["image"] and worker["env"] == [{"name": "HF_HOME", "value": "/cache"}]
    assert sidecar == {"name": "sidecar", "image": "busybox"}
    assert pod["spec"]["priorityClassName"] == "high"
    assert pod["metadata"]["annotations"] == {"team": "rl"} and pod["metadata"]["labels"]


def test_label_selector_string_matches_the_selector() -> None:
    assert resources.label_selector(pool_spec()) == "serve.mimo.dev/pool=chat"


def test_owner_reference_points_at_the_pool() -> None:
    ref = resources.owner_reference(pool_spec(), "serve.mimo.dev/v1alpha1", "MiMoPool")
    assert ref["uid"] == "u1" and ref["controller"] and ref["name"] == "chat"
