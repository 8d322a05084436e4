"""The real operator (kopf embedded in the test's loop) against kmock and a real Prometheus.

No Kubernetes API server can run on these machines (no Docker, no kube-apiserver binary): kmock's
KubernetesEmulator serves the Kubernetes API over HTTP on loopback. Prometheus is the real Debian
binary, started by the fixtures, scraping a prometheus_client exporter whose values the tests drive.
kmock has no controllers, so the Deployment's own status is never filled in (Ready stays False).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import kmock
import kopf
import pytest

from operators.autoscaler.autoscale import OperatorConfig
from operators.autoscaler.main import RunOptions, serve
from tests.support.autoscaler import (
    NAMESPACE,
    POOL,
    SCRAPE_INTERVAL_S,
    PrometheusProcess,
    VersionedEmulator,
    WorkerExporter,
    running_prometheus,
)

pytestmark = pytest.mark.kmock(cls=VersionedEmulator)

POOLS = "serve.mimo.dev/v1alpha1/mimopools"
DEPLOYMENTS = "apps/v1/deployments"
INTERVAL_S = 1.0
TARGET_WAITING = 4
WAITING_TOTAL = f'sum(mimo_worker_waiting_requests{{pool="{POOL}"}})'


def pool_body(replicas: int | None = None, down_window_s: int = 60, scaler: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": "/models/mimo-7b-rl",
        "engine": "sim",
        "minReplicas": 1,
        "maxReplicas": 10,
        "gpusPerReplica": 0,
        "autoscaling": {
            "metrics": [{"type": "WaitingRequests", "target": TARGET_WAITING}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": down_window_s}},
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    if scaler is not None:
        spec["autoscaling"]["scaler"] = scaler
    # kopf guards its patches with a JSON-patch test of resourceVersion; kmock never sets one itself.
    metadata = {"name": POOL, "namespace": NAMESPACE, "uid": "0b6d3a52-pool-llm", "resourceVersion": "1"}
    return {"apiVersion": "serve.mimo.dev/v1alpha1", "kind": "MiMoPool", "metadata": metadata, "spec": spec}


@contextlib.asynccontextmanager
async def running_operator(kube: kmock.KubernetesEmulator, prometheus_url: str) -> AsyncIterator[None]:
    """main.serve() as in production, but standalone and logged in to kmock's URL."""
    server = str(kube.url).rstrip("/")

    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=server)

    stop, ready = asyncio.Event(), asyncio.Event()
    config = OperatorConfig(prometheus_url=prometheus_url, interval_s=INTERVAL_S, query_timeout_s=1.0)
    options = RunOptions(is_standalone=True)
    task = asyncio.create_task(serve(config, options, login=login, stop_flag=stop, ready_flag=ready))
    await asyncio.wait_for(ready.wait(), timeout=15)
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)


def pool(kube: kmock.KubernetesEmulator) -> dict[str, Any]:
    return dict(kube.objects[POOLS, NAMESPACE, POOL].raw)


def replicas(kube: kmock.KubernetesEmulator) -> int:
    return int(pool(kube)["spec"].get("replicas", -1))


def condition(kube: kmock.KubernetesEmulator, kind: str) -> str | None:
    for cond in pool(kube).get("status", {}).get("conditions", []):
        if cond["type"] == kind:
            return str(cond["status"])
    return None


async def wait_until(check: Callable[[], bool], what: str, timeout_s: float) -> float:
    """Seconds until `check` held; fails the test after `timeout_s`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s: {what}")


async def metrics_flowing(kube: kmock.KubernetesEmulator) -> None:
    await wait_until(lambda: condition(kube, "MetricsUnavailable") == "False", "metrics available", 15)


def events(kube: kmock.KubernetesEmulator, reason: str) -> list[dict[str, Any]]:
    found = []
    for (resource, _, _), obj in kube.objects.items():
        if resource == "v1/events" and not obj.deleted and obj.raw.get("reason") == reason:
            found.append(obj.raw)
    return found


@pytest.mark.asyncio
async def test_step_up_scales_within_one_timer_period(
    kube: kmock.KubernetesEmulator, exporter: WorkerExporter, prometheus: PrometheusProcess
) -> None:
    exporter.set_load(waiting=0)
    await asyncio.to_thread(prometheus.wait_for_value, WAITING_TOTAL, 0.0)
    kube.objects[POOLS, NAMESPACE, POOL] = pool_body()
    async with running_operator(kube, prometheus.url):
        await metrics_flowing(kube)
        # the status patch and the first write of spec.replicas are separate requests: either may land first
        await wait_until(lambda: replicas(kube) == 1, "starts at minReplicas", 5)
        exporter.set_load(waiting=20)  # 5 replicas' worth at 4 waiting per replica
        elapsed = await wait_until(lambda: replicas(kube) == 5, "scaled up to 5", 10)
        await wait_until(lambda: bool(events(kube, "ScaledUp")), "a ScaledUp event", 5)
        await asyncio.sleep(2 * INTERVAL_S)
        assert replicas(kube) == 5  # the pool total over 5 replicas is on target: no compounding
    assert elapsed <= INTERVAL_S + SCRAPE_INTERVAL_S + 1.5, f"decision took {elapsed:.2f} s"
    deployment = kube.objects[DEPLOYMENTS, NAMESPACE, POOL].raw
    assert deployment["spec"]["replicas"] == 5
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == pool_body()["metadata"]["uid"]
    assert kube.objects["v1/services", NAMESPACE, POOL].raw["spec"]["clusterIP"] == "None"
    status = pool(kube)["status"]
    assert status["desiredReplicas"] == 5 and status["lastScaleTime"]
    assert status["selector"] == f"serve.mimo.dev/pool={POOL}"
    assert "1 -> 5" in events(kube, "ScaledUp")[0]["message"]


@pytest.mark.asyncio
async def test_scale_down_only_after_the_stabilization_window(
    kube: kmock.KubernetesEmulator, exporter: WorkerExporter, prometheus: PrometheusProcess
) -> None:
    window_s = 5
    exporter.set_load(waiting=20)
    await asyncio.to_thread(prometheus.wait_for_value, WAITING_TOTAL, 20.0)
    kube.objects[POOLS, NAMESPACE, POOL] = pool_body(replicas=5, down_window_s=window_s)
    async with running_operator(kube, prometheus.url):
        await metrics_flowing(kube)
        await asyncio.sleep(INTERVAL_S)
        assert replicas(kube) == 5
        exporter.set_load(waiting=0)
        elapsed = await wait_until(lambda: replicas(kube) < 5, "scaled down", window_s + 6)
        await wait_until(lambda: replicas(kube) == 1, "down to minReplicas", 5)
    # The last high recommendation may predate the drop by up to one timer period.
    assert elapsed >= window_s - INTERVAL_S, f"scaled down {elapsed:.2f} s after the drop"
    assert kube.objects[DEPLOYMENTS, NAMESPACE, POOL].raw["spec"]["replicas"] == 1


@pytest.mark.asyncio
async def test_prometheus_going_away_holds_replicas_and_sets_the_condition(
    kube: kmock.KubernetesEmulator, exporter: WorkerExporter
) -> None:
    exporter.set_load(waiting=8)  # 2 replicas' worth
    with running_prometheus(exporter) as own_prometheus:
        await asyncio.to_thread(own_prometheus.wait_for_value, WAITING_TOTAL, 8.0)
        kube.objects[POOLS, NAMESPACE, POOL] = pool_body(replicas=2, down_window_s=1)
        async with running_operator(kube, own_prometheus.url):
            await metrics_flowing(kube)
            await asyncio.to_thread(own_prometheus.stop)
            await wait_until(lambda: condition(kube, "MetricsUnavailable") == "True", "MetricsUnavailable", 5)
            exporter.set_load(waiting=0)
            await asyncio.sleep(3 * INTERVAL_S)  # several ticks without Prometheus, and past the window
            assert replicas(kube) == 2
            assert condition(kube, "ScalingActive") == "False"
            assert len(events(kube, "MetricsUnavailable")) == 1  # on the transition, not every tick
    assert kube.objects[DEPLOYMENTS, NAMESPACE, POOL].raw["spec"]["replicas"] == 2


def deployed(kube: kmock.KubernetesEmulator) -> int:
    return int(kube.objects[DEPLOYMENTS, NAMESPACE, POOL].raw["spec"]["replicas"])


async def external_scale(kube: kmock.KubernetesEmulator, replicas: int) -> None:
    """What KEDA's HPA (or a plain HPA) does: a merge patch of spec.replicas on the pool's /scale."""
    url = f"{str(kube.url).rstrip('/')}/apis/serve.mimo.dev/v1alpha1/namespaces/{NAMESPACE}/mimopools/{POOL}/scale"
    patch = {"json": {"spec": {"replicas": replicas}}, "headers": {"Content-Type": "application/merge-patch+json"}}
    async with aiohttp.ClientSession() as http, http.patch(url, **patch) as resp:
        assert resp.status == 200, await resp.text()


@pytest.mark.asyncio
@pytest.mark.parametrize("scaler", ["keda", "hpa"])
async def test_another_scaler_owns_the_replicas_and_the_operator_follows(
    kube: kmock.KubernetesEmulator, exporter: WorkerExporter, prometheus: PrometheusProcess, scaler: str
) -> None:
    exporter.set_load(waiting=20)  # 5 replicas' worth: the operator itself would scale 3 -> 5
    await asyncio.to_thread(prometheus.wait_for_value, WAITING_TOTAL, 20.0)
    kube.objects[POOLS, NAMESPACE, POOL] = pool_body(replicas=3, scaler=scaler)
    async with running_operator(kube, prometheus.url):
        await metrics_flowing(kube)  # the operator reads the metrics (status), so ticks are running
        await wait_until(lambda: condition(kube, "ScalingActive") == "False", "ScalingActive False", 5)
        await asyncio.sleep(3 * INTERVAL_S)
        assert replicas(kube) == 3 and deployed(kube) == 3
        await external_scale(kube, 7)  # the other scaler's decision, above what the metrics ask for
        await wait_until(lambda: deployed(kube) == 7, "the Deployment follows spec.replicas", 5)
        await external_scale(kube, 0)  # below minReplicas: KEDA's scale to zero
        await wait_until(lambda: deployed(kube) == 0, "the Deployment follows to zero", 5)
        await asyncio.sleep(3 * INTERVAL_S)
        assert replicas(kube) == 0 and deployed(kube) == 0  # not raised back to minReplicas
    reasons = {c["type"]: c["reason"] for c in pool(kube)["status"]["conditions"]}
    assert reasons["ScalingActive"] == "ExternalScaler"
    assert not events(kube, "ScaledUp") and not events(kube, "ScaledDown")
