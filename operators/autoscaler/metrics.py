"""The operator's own Prometheus metrics (`mimo_operator_*`), on the default registry."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

DESIRED_REPLICAS = Gauge(
    "mimo_operator_desired_replicas", "Replicas the scaling rule asks for, per pool.", ["namespace", "pool"]
)
CURRENT_REPLICAS = Gauge(
    "mimo_operator_current_replicas", "Replicas the pool had when last evaluated.", ["namespace", "pool"]
)
SCALING_DECISIONS = Counter(
    "mimo_operator_scaling_decisions_total",
    "Scaling decisions that changed replicas.",
    ["namespace", "pool", "direction"],
)
PROMETHEUS_QUERY_ERRORS = Counter(
    "mimo_operator_prometheus_query_errors_total",
    "Prometheus queries that failed or returned no usable value.",
    ["namespace", "pool"],
)
METRIC_VALUE = Gauge(
    "mimo_operator_metric_value",
    "Last value of each scaling metric (per replica for AverageValue).",
    ["namespace", "pool", "metric"],
)
RECONCILE_SECONDS = Histogram(
    "mimo_operator_reconcile_duration_seconds",
    "Time to reconcile a pool, by handler.",
    ["handler"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def forget_pool(namespace: str, pool: str) -> None:
    """Drop a deleted pool's series so that dashboards stop showing it."""
    for gauge in (DESIRED_REPLICAS, CURRENT_REPLICAS):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, pool)
