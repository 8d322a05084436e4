"""Helpers for the operator tests: a real Prometheus scraping a test-driven worker exporter, and kmock.

No Kubernetes API server can run on these machines (no Docker, no kube-apiserver binary), so kmock's
KubernetesEmulator stands in for it; everything else (kopf, aiohttp, Prometheus, PromQL) is real.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonpatch
import kmock
import pytest
from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server

from services.common.net import free_port

PROMETHEUS_BIN = "/usr/bin/prometheus"
SCRAPE_INTERVAL_S = 1.0
POOL = "llm"
NAMESPACE = "default"


@dataclass
class WorkerExporter:
    """One fake worker's /metrics, with the mimo_worker_* series; the test sets the values."""

    port: int
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.waiting = Gauge("mimo_worker_waiting_requests", "waiting", registry=self.registry)
        self.running = Gauge("mimo_worker_running_requests", "running", registry=self.registry)
        self.kv_usage = Gauge("mimo_worker_kv_usage_ratio", "kv", registry=self.registry)
        self.ttft = Histogram("mimo_worker_time_to_first_token_seconds", "ttft", registry=self.registry)
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    def set_load(self, *, waiting: float, running: float = 0.0, kv_usage: float = 0.0) -> None:
        self.waiting.set(waiting)
        self.running.set(running)
        self.kv_usage.set(kv_usage)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class PrometheusProcess:
    """/usr/bin/prometheus on a free loopback port, scraping the exporter every second."""

    def __init__(self, exporter_port: int, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(
            f"global:\n  scrape_interval: {SCRAPE_INTERVAL_S:g}s\n  scrape_timeout: {SCRAPE_INTERVAL_S:g}s\n"
            "scrape_configs:\n  - job_name: workers\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{exporter_port}']\n"
            f"        labels: {{pool: '{POOL}', namespace: '{NAMESPACE}'}}\n"
        )
        self.args = [
            PROMETHEUS_BIN,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait(lambda: self._get("/-/ready") is not None, "ready")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def query(self, promql: str) -> list[Any] | None:
        body = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        if body is None:
            return None
        import json

        return list(json.loads(body)["data"]["result"])

    def wait_for_value(self, promql: str, expected: float, timeout_s: float = 20.0) -> None:
        def seen() -> bool:
            result = self.query(promql)
            return bool(result) and float(result[0]["value"][1]) == expected  # type: ignore[index]

        self._wait(seen, f"{promql} == {expected}", timeout_s)

    def _get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as response:
                return bytes(response.read())
        except OSError:
            return None

    def _wait(self, check: Any, what: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        raise AssertionError(f"Prometheus at {self.url}: {what} not reached in {timeout_s} s")


def require_prometheus() -> None:
    if shutil.which(PROMETHEUS_BIN) is None:
        pytest.fail(
            f"{PROMETHEUS_BIN} is missing: the operator's integration tests need a real Prometheus. "
            "Install it with `apt-get install -y prometheus` (CI does).",
            pytrace=False,
        )


@contextlib.contextmanager
def running_prometheus(exporter: WorkerExporter) -> Iterator[PrometheusProcess]:
    require_prometheus()
    with tempfile.TemporaryDirectory(prefix="mimo-prom-") as workdir:
        prom = PrometheusProcess(exporter.port, Path(workdir))
        prom.start()
        try:
            yield prom
        finally:
            prom.stop()


class VersionedEmulator(kmock.KubernetesEmulator):
    """kmock whose writes move metadata.resourceVersion, as the API server's do.

    kopf skips watch events older than its own last patch by resourceVersion; with kmock's constant
    (absent) version it replays stale bodies and re-runs handlers until the stream settles.
    """

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and request.action in (kmock.action.CREATE, kmock.action.UPDATE):
            version = str(next(_VERSIONS))
            if isinstance(request.data, dict):
                request.data.setdefault("metadata", {})["resourceVersion"] = version
            elif isinstance(request.data, list):  # a JSON patch: after kopf's own `test` op
                request.data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
        return await super()._handle(request)

    async def _render_error(self, exc: Exception) -> Any:
        # The API server answers a failed JSON-patch `test` with 422, which kopf expects; kmock says 500.
        if isinstance(exc, jsonpatch.JsonPatchTestFailed):
            exc = kmock.KubernetesError(status=422, reason="Invalid", message=str(exc))
        return await super()._render_error(exc)


_VERSIONS = itertools.count(1000)


def declare_resources(server: kmock.KubernetesEmulator) -> None:
    """kopf watches nothing until CRDs and namespaces are discoverable (see reference/k8s-testing.md)."""
    info = kmock.ResourceInfo
    verbs = {"get", "list", "watch", "create", "patch", "update", "delete"}
    server.resources["serve.mimo.dev/v1alpha1/mimopools"] = info(
        kind="MiMoPool", namespaced=True, verbs=verbs, subresources={"status", "scale"}
    )
    server.resources["apps/v1/deployments"] = info(
        kind="Deployment", namespaced=True, verbs=verbs, subresources={"scale"}
    )
    server.resources["v1/services"] = info(kind="Service", namespaced=True, verbs=verbs)
    server.resources["v1/events"] = info(kind="Event", namespaced=True, verbs=verbs)
    server.resources["v1/namespaces"] = info(kind="Namespace", namespaced=False, verbs=verbs)
    server.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = info(
        kind="CustomResourceDefinition", namespaced=False, verbs=verbs
    )
