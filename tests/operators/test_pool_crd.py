"""The shipped CRD YAML: generated from the code, with the subresources HPA-style scaling needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from operators.autoscaler import crd
from operators.autoscaler.spec import DEFAULT_SCALE_DOWN_WINDOW_S, DEFAULT_TOLERANCE

PEERING = Path(crd.__file__).with_name("peering.yaml")


def version() -> dict[str, Any]:
    loaded = yaml.safe_load(crd.CRD_PATH.read_text())
    return dict(loaded["spec"]["versions"][0])


def test_yaml_is_up_to_date_with_the_generator() -> None:
    assert crd.CRD_PATH.read_text() == crd.render(), (
        "run: python -m operators.autoscaler.crd > operators/autoscaler/crd.yaml"
    )


def test_scale_and_status_subresources() -> None:
    assert version()["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }


def test_schema_carries_the_code_defaults() -> None:
    spec = version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    auto = spec["properties"]["autoscaling"]["properties"]
    assert auto["tolerance"]["default"] == DEFAULT_TOLERANCE
    down = auto["behavior"]["properties"]["scaleDown"]["properties"]
    assert down["stabilizationWindowSeconds"]["default"] == DEFAULT_SCALE_DOWN_WINDOW_S
    assert set(spec["required"]) == {"model", "maxReplicas"}
    kinds = auto["metrics"]["items"]["properties"]["type"]["enum"]
    assert kinds == ["WaitingRequests", "KVCacheUsage", "TimeToFirstTokenP90", "PromQL"]


def test_printer_columns_and_names() -> None:
    doc = yaml.safe_load(crd.CRD_PATH.read_text())
    assert doc["metadata"]["name"] == "mimopools.serve.mimo.dev" and doc["spec"]["scope"] == "Namespaced"
    columns = {c["name"] for c in version()["additionalPrinterColumns"]}
    assert {"Desired", "Replicas", "Ready", "Age"} <= columns


def test_peering_manifests_define_the_named_peering() -> None:
    docs = list(yaml.safe_load_all(PEERING.read_text()))
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert ("ClusterKopfPeering", "mimo-autoscaler") in kinds
    assert ("CustomResourceDefinition", "clusterkopfpeerings.kopf.dev") in kinds
    assert ("CustomResourceDefinition", "kopfpeerings.kopf.dev") in kinds
