"""Kubernetes discovery keeps the worker pool equal to the Ready pods that match the selector.

No Kubernetes API server can run on these machines, so kmock's KubernetesEmulator (list + watch over real HTTP)
stands in for it; the workers behind the pods are real sim workers on loopback."""

from __future__ import annotations

import asyncio

import kmock
import pytest

from services.common.net import free_port
from services.router.breaker import CircuitBreaker
from services.router.discovery import KubernetesDiscovery, matches_selector, pod_worker_url
from services.router.worker_client import WorkerClient
from services.router.workers import HealthPolicy, WorkerPool
from services.stack import ChildSpec, Stack
from tests.support.router_stack import SIM_PROFILE

PODS = "v1/pods"
NS = "serving"


def pod(name: str, port: int, ready: bool = True, labels: dict[str, str] | None = None) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {"app": "mimo-worker"}},
        "spec": {"containers": [{"name": "worker", "ports": [{"name": "grpc", "containerPort": port}]}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1",
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }  # fmt: skip


def test_only_running_ready_pods_are_workers():
    assert pod_worker_url(pod("a", 5), 31000) == "127.0.0.1:5"
    assert pod_worker_url(pod("a", 5, ready=False), 31000) is None
    terminating = pod("a", 5)
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert pod_worker_url(terminating, 31000) is None


@pytest.mark.parametrize(
    "selector,expected",
    [("app=w", True), ("app==w", True), ("app=x", False), ("app!=x", True), ("tier", True), ("!tier", False),
     ("app=w,tier=gpu", True), ("app=w,tier=cpu", False), ("", True)],
)  # fmt: skip
def test_label_selectors(selector, expected):
    assert matches_selector({"app": "w", "tier": "gpu"}, selector) is expected


async def until(predicate, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


@pytest.mark.e2e
async def test_discovery_follows_adds_readiness_and_deletes(kmock: kmock.KubernetesEmulator, model_dir, tmp_path):
    kmock.resources[PODS] = kmock.ResourceInfo(
        kind="Pod", namespaced=True, verbs={"get", "list", "watch", "create", "patch", "delete"}
    )
    ports = [free_port(), free_port()]
    specs = [
        ChildSpec(f"worker-{i}", ("worker", "--engine", "sim", "--model", str(model_dir), "--profile", str(SIM_PROFILE),
                                  "--listen", f"127.0.0.1:{p}", "--metrics-port", "-1"), p)
        for i, p in enumerate(ports)
    ]  # fmt: skip
    stack = Stack(specs, tmp_path)
    await stack.start()
    pool = WorkerPool(HealthPolicy(interval_s=0.2), CircuitBreaker(), WorkerClient)
    discovery = KubernetesDiscovery(pool, str(kmock.url), NS, "app=mimo-worker", 31000, resync_s=2)
    a, b = f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}"
    try:
        kmock.objects[PODS, NS, "worker-a"] = pod("worker-a", ports[0])
        kmock.objects[PODS, NS, "worker-b"] = pod("worker-b", ports[1], ready=False)
        kmock.objects[PODS, NS, "other"] = pod("other", ports[1], labels={"app": "something-else"})
        await discovery.start()
        pool.start()
        await until(lambda: [w.url for w in pool.routable()] == [a])
        kmock.objects[PODS, NS, "worker-b"] = pod("worker-b", ports[1], ready=True)  # becomes Ready
        await until(lambda: {w.url for w in pool.routable()} == {a, b})
        del kmock.objects[PODS, NS, "worker-a"]  # deleted
        await until(lambda: set(pool.workers) == {b})
        kmock.objects[PODS, NS, "worker-b"] = pod("worker-b", ports[1], ready=False)  # readiness lost
        await until(lambda: not pool.workers)
    finally:
        await discovery.stop()
        await pool.stop()
        await stack.stop()
