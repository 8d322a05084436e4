"""PromQL for the built-in metric kinds, built from the pool's name and namespace.

Workers export `mimo_worker_*` series; Prometheus adds `namespace` and relabels the pod label
`serve.mimo.dev/pool` to `pool`, so one pool's series are `{namespace="NS", pool="NAME"}`.
"""

from __future__ import annotations

from operators.autoscaler.spec import MetricKind, MetricSpec, PoolSpec

WAITING_REQUESTS = "mimo_worker_waiting_requests"
RUNNING_REQUESTS = "mimo_worker_running_requests"
KV_USAGE_RATIO = "mimo_worker_kv_usage_ratio"
TTFT_SECONDS = "mimo_worker_time_to_first_token_seconds"


def selector(pool: PoolSpec) -> str:
    return f'{{namespace="{_escape(pool.namespace)}",pool="{_escape(pool.name)}"}}'


def metric_query(pool: PoolSpec, metric: MetricSpec) -> str:
    """The PromQL whose single value is compared with the metric's target."""
    sel = selector(pool)
    match metric.kind:
        case MetricKind.WAITING_REQUESTS:
            return f"sum({WAITING_REQUESTS}{sel})"  # a pool total: AverageValue divides by replicas
        case MetricKind.KV_CACHE_USAGE:
            return f"avg({KV_USAGE_RATIO}{sel})"
        case MetricKind.TTFT_P90:
            rate = f"rate({TTFT_SECONDS}_bucket{sel}[{metric.rate_window}])"
            return f"histogram_quantile(0.9, sum by (le) ({rate}))"
        case MetricKind.PROMQL:
            return metric.query


def activity_query(pool: PoolSpec) -> str:
    """Requests in flight in the pool; empty (not zero) when no worker reports, so never idle by accident."""
    if pool.scaling.scale_to_zero is not None and pool.scaling.scale_to_zero.activation_query:
        return pool.scaling.scale_to_zero.activation_query
    sel = selector(pool)
    return f"sum({RUNNING_REQUESTS}{sel}) + sum({WAITING_REQUESTS}{sel})"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
