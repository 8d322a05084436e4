"""The Prometheus series names the code exports, and the metric names a PromQL expression uses.

The names come from the real collectors: each service's metrics module is imported, the shared
per-service RPC pair (`mimo_<service>_requests_total`, `mimo_<service>_request_duration_seconds`) is
created for every service run by services/common/server.py, and the default registry lists them with
their suffixes (_total, _bucket, _sum, _count).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

from services.common.metrics import rpc_metrics

REPO = Path(__file__).resolve().parents[2]
MODULES = (
    "services.router.metrics",
    "services.router.metrics_rollout",
    "services.worker.metrics",
    "services.tokenizer.metrics",
    "services.verifier.metrics",
    "operators.autoscaler.metrics",
)
RPC_SERVICES = ("router", "tokenizer", "worker", "verifier")  # `Service`s run by services/common/server.py
BUILTIN = {"up"}  # written by Prometheus itself for every target
NAME = re.compile(r"(?<![\w:$])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:(])")
KEYWORDS = {
    "sum",
    "avg",
    "max",
    "min",
    "count",
    "rate",
    "increase",
    "deriv",
    "delta",
    "irate",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "vector",
    "scalar",
    "histogram_quantile",
    "le",
    "bool",
    "offset",
    "changes",
    "abs",
    "clamp_min",
    "clamp_max",
    "label_values",
    "avg_over_time",
}


def exported_names() -> set[str]:
    for module in MODULES:
        if (REPO / (module.replace(".", "/") + ".py")).exists():
            importlib.import_module(module)
    for service in RPC_SERVICES:
        rpc_metrics(service)
    names = set(REGISTRY._names_to_collectors)  # the registry's own index of series names
    return {n for n in names if n.startswith("mimo_")} | BUILTIN


def recorded_names() -> set[str]:
    """Series written by the recording rules of files/alerts.yaml."""
    rules = yaml.safe_load((REPO / "helm/mimo-serve/files/alerts.yaml").read_text())
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers followed by a selector, range, or operator)."""
    text = re.sub(r'"[^"]*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "[]", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\b\d+(\.\d+)?([eE][-+]?\d+)?\b", "", text)  # numbers
    return {m.group(1) for m in NAME.finditer(text)} - KEYWORDS
