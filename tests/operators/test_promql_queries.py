"""PromQL for each metric kind, checked against the real Prometheus, and the async query client."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from operators.autoscaler import promql
from operators.autoscaler.prometheus import PrometheusClient, PrometheusError, parse_value
from operators.autoscaler.spec import parse_pool
from tests.support.autoscaler import NAMESPACE, POOL, PrometheusProcess, WorkerExporter, free_port


def pool_spec(**autoscaling: Any) -> Any:
    spec = {"model": "/m", "maxReplicas": 4, "autoscaling": autoscaling}
    return parse_pool({"metadata": {"name": POOL, "namespace": NAMESPACE}, "spec": spec})


ALL_KINDS = pool_spec(
    metrics=[
        {"type": "WaitingRequests", "target": 4},
        {"type": "KVCacheUsage", "target": 0.7},
        {"type": "TimeToFirstTokenP90", "target": 1.0, "window": "30s"},
        {"type": "PromQL", "target": 1, "query": 'max(mimo_worker_running_requests{pool="llm"})'},
    ],
    scaleToZero={"idleSeconds": 60},
)


def test_builtin_queries_select_the_pool() -> None:
    waiting, kv, ttft, custom = (promql.metric_query(ALL_KINDS, m) for m in ALL_KINDS.scaling.metrics)
    assert waiting == f'sum(mimo_worker_waiting_requests{{namespace="{NAMESPACE}",pool="{POOL}"}})'
    assert kv.startswith("avg(mimo_worker_kv_usage_ratio{")
    assert "histogram_quantile(0.9" in ttft and "_bucket{" in ttft and "[30s]" in ttft
    assert custom == 'max(mimo_worker_running_requests{pool="llm"})'


def test_label_values_are_escaped() -> None:
    pool = parse_pool({"metadata": {"name": 'a"b', "namespace": "n"}, "spec": {"model": "/m", "maxReplicas": 1}})
    assert 'pool="a\\"b"' in promql.selector(pool)


def test_parse_value_shapes() -> None:
    assert parse_value({"resultType": "vector", "result": []}, "q") is None
    assert parse_value({"resultType": "vector", "result": [{"value": [0, "2.5"]}]}, "q") == 2.5
    assert parse_value({"resultType": "vector", "result": [{"value": [0, "NaN"]}]}, "q") is None
    assert parse_value({"resultType": "scalar", "result": [0, "3"]}, "q") == 3.0
    with pytest.raises(PrometheusError, match="2 series"):
        parse_value({"resultType": "vector", "result": [{"value": [0, "1"]}] * 2}, "q")


@pytest.mark.asyncio
async def test_every_query_runs_on_the_real_prometheus(prometheus: PrometheusProcess, exporter: WorkerExporter) -> None:
    exporter.set_load(waiting=6, running=2, kv_usage=0.5)
    exporter.ttft.observe(0.3)
    await asyncio.to_thread(prometheus.wait_for_value, promql.activity_query(ALL_KINDS), 8.0)
    client = PrometheusClient(timeout_s=2.0)
    try:
        values = [
            await client.query(prometheus.url, promql.metric_query(ALL_KINDS, m)) for m in ALL_KINDS.scaling.metrics
        ]
        assert values[0] == 6.0 and values[1] == 0.5 and values[3] == 2.0
        assert values[2] is None or values[2] >= 0  # no rate yet is NaN -> None, never an error
        with pytest.raises(PrometheusError, match=r"bad_data|parse"):
            await client.query(prometheus.url, "sum(")
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_unreachable_prometheus_is_an_error() -> None:
    client = PrometheusClient(timeout_s=1.0)
    try:
        with pytest.raises(PrometheusError):
            await client.query(f"http://127.0.0.1:{free_port()}", "up")
    finally:
        await client.close()
