"""One evaluation of a pool: read Prometheus, decide, write replicas through the scale subresources."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from operators.autoscaler import kube, promql, resources
from operators.autoscaler.kube import KubeClient
from operators.autoscaler.prometheus import PrometheusClient, PrometheusError
from operators.autoscaler.scaling import History, Observation, decide, hold
from operators.autoscaler.spec import GROUP, KIND, VERSION, PoolSpec
from operators.autoscaler.status import Readings, Tick


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    """Tunables of the operator, built in main and reaching handlers through kopf.Memo."""

    prometheus_url: str
    interval_s: float = 5.0
    query_timeout_s: float = 3.0
    kube_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Context:
    """Everything the handlers share: config, clients and each pool's scaling history."""

    config: OperatorConfig
    prometheus: PrometheusClient
    kube: KubeClient
    histories: dict[tuple[str, str], History] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def build(cls, config: OperatorConfig) -> Context:
        return cls(config, PrometheusClient(config.query_timeout_s), KubeClient(config.kube_timeout_s))

    async def close(self) -> None:
        await self.prometheus.close()
        await self.kube.close()


async def ensure_workload(ctx: Context, pool: PoolSpec) -> int:
    """Create or update the pool's Deployment and Service (owned by the pool); return the replicas used."""
    replicas = pool.replicas if pool.replicas is not None else pool.scaling.min_replicas
    owner = resources.owner_reference(pool, f"{GROUP}/{VERSION}", KIND)
    deployment = resources.deployment(pool, replicas)
    service = resources.service(pool)
    for manifest in (deployment, service):
        manifest["metadata"]["ownerReferences"] = [owner]
    await ctx.kube.apply(kube.deployments_path(pool.namespace), deployment)
    await ctx.kube.apply(kube.services_path(pool.namespace), service)
    return replicas


async def read_metrics(ctx: Context, pool: PoolSpec, current: int) -> Readings:
    """Query every metric (none at zero replicas) and the activity signal concurrently."""
    url = pool.prometheus_url or ctx.config.prometheus_url
    queries = [promql.metric_query(pool, m) for m in pool.scaling.metrics] if current > 0 else []
    activity = [promql.activity_query(pool)] if pool.scaling.scale_to_zero is not None else []
    results = await asyncio.gather(*(ctx.prometheus.query(url, q) for q in queries + activity), return_exceptions=True)
    values: list[float | None] = []
    errors: list[str] = []
    for query, result in zip(queries + activity, results, strict=True):
        if isinstance(result, PrometheusError):
            errors.append(str(result))
            result = None
        elif isinstance(result, BaseException):
            raise result
        elif result is None and query not in activity:
            errors.append(f"no data for {query}")
        values.append(result)
    missing = (None,) * len(pool.scaling.metrics)
    metric_values = tuple(values[: len(queries)]) if queries else missing
    return Readings(metric_values, values[-1] if activity else None, tuple(errors))


async def evaluate(ctx: Context, pool: PoolSpec) -> Tick:
    """Decide the pool's replicas from fresh readings and write them; the caller writes the status."""
    current = await current_replicas(ctx, pool)
    deployment = await ctx.kube.get(kube.deployments_path(pool.namespace, pool.name))
    if deployment is None:
        await ensure_workload(ctx, pool)
    readings = await read_metrics(ctx, pool, current)
    key = (pool.namespace, pool.name)
    history = ctx.histories.get(key, History())
    if pool.scaling.is_external:
        decision = hold(pool.scaling, current, history, f"replicas owned by {pool.scaling.scaler.value}")
    elif pool.scaling.is_enabled:
        observation = Observation(current, readings.values, readings.activity)
        decision = decide(pool.scaling, observation, history, ctx.clock())
    else:
        decision = hold(pool.scaling, current, history, "autoscaling disabled")
    await write_replicas(ctx, pool, current, decision.desired_replicas, deployment)
    ctx.histories[key] = decision.history  # kept only once the replicas are written
    observed, ready = _deployment_replicas(deployment)
    return Tick(pool, decision, readings, observed, ready)


async def current_replicas(ctx: Context, pool: PoolSpec) -> int:
    """spec.replicas, read fresh through the scale subresource (the watched body may lag a write)."""
    scale = await ctx.kube.get(kube.pool_path(pool.namespace, pool.name) + "/scale")
    replicas = (scale or {}).get("spec", {}).get("replicas")
    if isinstance(replicas, int):
        return replicas
    return pool.replicas if pool.replicas is not None else pool.scaling.min_replicas


async def write_replicas(
    ctx: Context, pool: PoolSpec, current: int, desired: int, deployment: dict[str, Any] | None
) -> None:
    if desired != current:
        await ctx.kube.scale(kube.pool_path(pool.namespace, pool.name), desired)
    deployed = (deployment or {}).get("spec", {}).get("replicas")
    if deployment is not None and deployed != desired:
        await ctx.kube.scale(kube.deployments_path(pool.namespace, pool.name), desired)


def _deployment_replicas(deployment: dict[str, Any] | None) -> tuple[int, int]:
    status = (deployment or {}).get("status") or {}
    return int(status.get("replicas") or 0), int(status.get("readyReplicas") or 0)


def forget(ctx: Context, namespace: str, name: str) -> None:
    ctx.histories.pop((namespace, name), None)
