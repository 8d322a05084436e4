"""Render the chart with Helm's own Go SDK (helm-python-sdk, no helm binary needed) and validate manifests.

Built-in kinds are checked with kubernetes-validate --strict (the upstream OpenAPI schemas); our custom
resources (MiMoPool, KopfPeering) against the openAPIV3Schema of the CRDs the chart ships, with unknown
fields rejected as `kubectl apply --validate=strict` would; the Prometheus Operator's kinds against a
small schema of the fields the chart uses (their CRDs are not available offline).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate.utils as kv
import yaml
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "mimo-serve"


def dashboards_build() -> ModuleType:
    """helm/mimo-serve/dashboards/build.py as a module (the script puts its own folder on sys.path for its parts)."""
    spec = importlib.util.spec_from_file_location("dashboards_build", CHART / "dashboards" / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build


SCENARIOS = {"default": None, **{p.name.removesuffix("-values.yaml"): p for p in sorted((CHART / "ci").glob("*.yaml"))}}
RELEASE, NAMESPACE = "mimo-serve", "mimo"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas available.
KUBE_VERSIONS = ("1.30.0", kv.latest_version())


@dataclass(frozen=True, slots=True)
class Manifest:
    source: str  # template path
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    def __repr__(self) -> str:
        return f"{self.kind}/{self.name} ({self.source})"


@functools.cache
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART)


def scenario_values(scenario: str) -> dict[str, Any]:
    path = SCENARIOS[scenario]
    return {} if path is None else dict(yaml.safe_load(path.read_text()))


def render(values: Mapping[str, Any] | None = None, namespace: str = NAMESPACE) -> list[Manifest]:
    """Every manifest of the chart's templates (NOTES.txt aside), in template order (a fresh copy)."""
    return copy.deepcopy(_render(json.dumps(values or {}, sort_keys=True), namespace))


@functools.cache
def _render(values_json: str, namespace: str) -> list[Manifest]:
    rendered = chart().render(values=json.loads(values_json), name=RELEASE, namespace=namespace)
    found = []
    for source, text in sorted(rendered.items()):
        if source.endswith("NOTES.txt"):
            continue
        found += [Manifest(source, doc) for doc in yaml.safe_load_all(text) if doc]
    return found


def find(manifests: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [m for m in manifests if m.kind == kind and (name is None or m.name == name)]


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = find(manifests, kind, name)
    assert len(matches) == 1, f"expected one {kind} {name or ''}, got {matches}"
    return matches[0].body


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(merged.get(key), Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# Validation ----------------------------------------------------------------------------------------------


def shipped_crds() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the openAPIV3Schema of each CRD in crds/."""
    schemas = {}
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            spec = crd["spec"]
            for version in spec["versions"]:
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                root = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                root.setdefault("properties", {}).update(
                    apiVersion={"type": "string"}, kind={"type": "string"}, metadata=_object_meta_schema()
                )
                schemas[key] = strict_schema(root)
    return schemas


def vendored_crds() -> dict[tuple[str, str], dict[str, Any]]:
    """Other projects' CRDs the chart can write, from tests/helm/data (each file says where it came from)."""
    data = REPO / "tests" / "helm" / "data"
    keda = json.loads((data / "keda-scaledobject-v1alpha1.json").read_text())["openAPIV3Schema"]
    keda["properties"]["metadata"] = _object_meta_schema()
    return {("keda.sh/v1alpha1", "ScaledObject"): strict_schema(keda)}


def strict_schema(schema: Any) -> Any:
    """A structural schema that rejects unknown fields where the API server would silently prune them."""
    if isinstance(schema, list):
        return [strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_schema(v) for k, v in schema.items()}
    if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    return out


def _object_meta_schema() -> dict[str, Any]:
    strings = {"type": "object", "additionalProperties": {"type": "string"}}
    return {
        "type": "object",
        "required": ["name"],
        "additionalProperties": True,  # the rest of ObjectMeta
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
            "namespace": {"type": "string"},
            "labels": strings,
            "annotations": strings,
        },
    }


def monitoring_schemas() -> dict[str, dict[str, Any]]:
    """The parts of ServiceMonitor and PrometheusRule (monitoring.coreos.com/v1) that the chart writes."""
    relabel = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "action": {"enum": ["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep"]},
            "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}},
            "targetLabel": {"type": "string"},
            "replacement": {"type": "string"},
            "regex": {"type": "string"},
        },
    }
    endpoint = {
        "type": "object",
        "additionalProperties": False,
        "required": ["port"],
        "properties": {
            "port": {"type": "string"},
            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
            "honorLabels": {"type": "boolean"},
            "relabelings": {"type": "array", "items": relabel},
        },
    }
    selector = {"type": "object", "properties": {"matchLabels": {"type": "object"}}, "additionalProperties": False}
    rule = {
        "type": "object",
        "additionalProperties": False,
        "required": ["expr"],
        "properties": {
            "alert": {"type": "string"},
            "record": {"type": "string"},
            "expr": {"type": "string"},
            "for": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    group = {"type": "object", "required": ["name", "rules"], "properties": {"name": {}, "rules": {"items": rule}}}

    def kind(spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["apiVersion", "kind", "metadata", "spec"],
            "properties": {"metadata": _object_meta_schema(), "spec": spec},
        }

    return {
        "ServiceMonitor": kind(
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", "endpoints"],
                "properties": {"selector": selector, "endpoints": {"type": "array", "minItems": 1, "items": endpoint}},
            }
        ),
        "PrometheusRule": kind(
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {"groups": {"type": "array", "items": group}},
            }
        ),
    }


def validation_errors(manifests: list[Manifest]) -> Iterator[str]:
    """One message per manifest that fails its schema."""
    crds, monitoring = {**shipped_crds(), **vendored_crds()}, monitoring_schemas()
    for manifest in manifests:
        body = manifest.body
        key = (body.get("apiVersion"), body.get("kind"))
        if key in crds:
            schema: dict[str, Any] | None = crds[key]
        elif body.get("apiVersion") == "monitoring.coreos.com/v1":
            schema = monitoring.get(manifest.kind)
            if schema is None:
                yield f"{manifest!r}: no schema for this monitoring kind"
                continue
        else:
            schema = None
        if schema is not None:
            for error in jsonschema.Draft4Validator(schema).iter_errors(body):
                yield f"{manifest!r}: {'.'.join(map(str, error.absolute_path))}: {error.message}"
            continue
        for version in KUBE_VERSIONS:
            validator = kube_validator(version, manifest.kind, str(body["apiVersion"]))
            if validator is None:
                yield f"{manifest!r}: Kubernetes {version} has no schema for {body['apiVersion']} {manifest.kind}"
                continue
            for error in validator.iter_errors(body):
                path = ".".join(map(str, error.absolute_path))
                yield f"{manifest!r} (Kubernetes {version}): {path}: {error.message}"


@functools.cache
def kube_validator(version: str, kind: str, api_version: str) -> jsonschema.protocols.Validator | None:
    """kubernetes-validate's --strict check (its schemas, its validator), built once per kind and version.

    kubernetes_validate.validate() re-reads the large definitions file on every call; this is the same
    check with the schemas loaded once.
    """
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    directory = f"kubernetes-json-schema/v{version}-local-strict"
    try:
        schema = kv.schema_contents(f"{directory}/{kind.lower()}-{group_version}.json", version)
    except FileNotFoundError:
        return None
    definitions = kv.schema_contents(f"{directory}/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)
