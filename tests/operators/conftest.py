"""Fixtures for the operator tests: a real Prometheus scraping a test-driven exporter, and kmock.

No Kubernetes API server can run on these machines (no Docker, no kube-apiserver binary), so kmock's
KubernetesEmulator stands in for it; everything else (kopf, aiohttp, Prometheus, PromQL) is real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import kmock
import pytest
import pytest_asyncio

from tests.support.autoscaler import PrometheusProcess, WorkerExporter, declare_resources, free_port, running_prometheus


@pytest.fixture(scope="session")
def exporter() -> Iterator[WorkerExporter]:
    worker = WorkerExporter(free_port())
    yield worker
    worker.close()


@pytest.fixture(scope="session")
def prometheus(exporter: WorkerExporter) -> Iterator[PrometheusProcess]:
    """Shared by the tests that keep it running; a test that kills Prometheus starts its own."""
    with running_prometheus(exporter) as prom:
        yield prom


@pytest_asyncio.fixture()
async def kube(kmock: kmock.KubernetesEmulator) -> AsyncIterator[kmock.KubernetesEmulator]:
    declare_resources(kmock)
    yield kmock
    await asyncio.sleep(0)
