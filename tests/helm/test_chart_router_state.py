"""RL datasets and their state in the chart: each dataset's ConfigMap key is mounted and passed as a --dataset flag
the router parses; the state directory is a PersistentVolumeClaim (kept on uninstall) passed as --state-dir."""

from __future__ import annotations

import pytest

from services.router.rollout_runs import parse_dataset_flag
from tests.support.chart import find, one, render, validation_errors

DATASETS = [
    {"name": "gsm8k", "configMap": "mimo-datasets", "key": "gsm8k.jsonl", "alpha": 0.2},
    {"name": "code", "configMap": "mimo-code", "key": "code.jsonl", "scorer": "rm.mimo.svc:50060"},
]
VALUES = {"router": {"replicas": 1, "datasets": DATASETS, "state": {"enabled": True, "size": "2Gi"}}}


def router_container(manifests) -> tuple[dict, dict]:
    pod = one(manifests, "Deployment", "mimo-serve-router")["spec"]["template"]["spec"]
    return pod, next(c for c in pod["containers"] if c["name"] == "router")


def test_datasets_and_state_are_mounted_and_passed_as_flags_the_router_parses() -> None:
    manifests = render(VALUES)
    assert not list(validation_errors(manifests))
    pod, router = router_container(manifests)
    flags = [parse_dataset_flag(a.removeprefix("--dataset=")) for a in router["args"] if a.startswith("--dataset=")]
    assert [(f.name, str(f.path), f.scorer, f.alpha) for f in flags] == [
        ("gsm8k", "/etc/mimo/datasets/gsm8k/gsm8k.jsonl", "", 0.2),
        ("code", "/etc/mimo/datasets/code/code.jsonl", "rm.mimo.svc:50060", 0.1),
    ]
    mounts = {m["name"]: m for m in router["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["dataset-gsm8k"]["mountPath"] == "/etc/mimo/datasets/gsm8k" and mounts["dataset-gsm8k"]["readOnly"]
    assert volumes["dataset-code"]["configMap"] == {
        "name": "mimo-code",
        "items": [{"key": "code.jsonl", "path": "code.jsonl"}],
    }
    assert "--state-dir=/var/lib/mimo/state" in router["args"] and mounts["state"]["mountPath"] == "/var/lib/mimo/state"
    claim = one(manifests, "PersistentVolumeClaim", "mimo-serve-router-state")
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == "mimo-serve-router-state"
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_an_existing_claim_is_used_as_is_and_nothing_is_mounted_by_default() -> None:
    manifests = render({"router": {"replicas": 1, "state": {"enabled": True, "existingClaim": "rl-state"}}})
    pod, _ = router_container(manifests)
    assert next(v for v in pod["volumes"] if v["name"] == "state")["persistentVolumeClaim"]["claimName"] == "rl-state"
    assert not find(manifests, "PersistentVolumeClaim")
    _, router = router_container(render({}))
    assert not any(a.startswith(("--dataset", "--state-dir")) for a in router["args"])


def test_state_with_several_router_replicas_is_refused_with_a_reason() -> None:
    with pytest.raises(Exception, match=r"router\.replicas to 1"):
        render({"router": {"replicas": 2, "state": {"enabled": True}}})
