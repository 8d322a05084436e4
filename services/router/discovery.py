"""Where workers come from: a static list, or Kubernetes pods (list + watch, Ready pods only, periodic relist)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from services.router.workers import WorkerPool

log = logging.getLogger(__name__)
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class Discovery(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(slots=True)
class StaticDiscovery:
    pool: WorkerPool
    urls: Sequence[str]

    async def start(self) -> None:
        for url in self.urls:
            await self.pool.add(url)

    async def stop(self) -> None:
        return None


def matches_selector(labels: dict[str, str], selector: str) -> bool:
    """Equality-based label selector (`k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated), checked on our side too."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = (x.strip() for x in term.split("!=", 1))
            ok = labels.get(key) != value
        elif "=" in term:
            key, value = (x.strip() for x in term.replace("==", "=").split("=", 1))
            ok = labels.get(key) == value
        else:
            ok = (term[1:] not in labels) if term.startswith("!") else (term in labels)
        if not ok:
            return False
    return True


def pod_worker_url(pod: dict[str, Any], default_port: int) -> str | None:
    """host:port of a pod that should get traffic: running, Ready, not terminating; else None."""
    status, meta = pod.get("status", {}), pod.get("metadata", {})
    if meta.get("deletionTimestamp") or status.get("phase") != "Running" or not status.get("podIP"):
        return None
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))
    if not ready:
        return None
    port = default_port
    for container in pod.get("spec", {}).get("containers", []):
        for p in container.get("ports", []):
            if p.get("name") == "grpc":
                port = p["containerPort"]
    return f"{status['podIP']}:{port}"


class KubernetesDiscovery:
    """Keeps the pool equal to the Ready pods matching a label selector in one namespace."""

    def __init__(
        self, pool: WorkerPool, api_url: str, namespace: str, selector: str, port: int, resync_s: float = 30.0
    ) -> None:
        self.pool, self.namespace, self.selector, self.port, self.resync_s = pool, namespace, selector, port, resync_s
        self._api_url = api_url.rstrip("/")
        self._task: asyncio.Task[None] | None = None
        self._pods: dict[str, str] = {}  # pod name -> worker url
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        headers, ssl_ctx = {}, None
        token = SERVICE_ACCOUNT / "token"
        if self._api_url.startswith("https") and token.exists():
            headers["Authorization"] = f"Bearer {token.read_text().strip()}"
            ssl_ctx = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
        return aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(ssl=ssl_ctx or True))

    def _url(self, pod: dict[str, Any]) -> str | None:
        if not matches_selector(pod.get("metadata", {}).get("labels") or {}, self.selector):
            return None
        return pod_worker_url(pod, self.port)

    @property
    def _pods_path(self) -> str:
        return f"{self._api_url}/api/v1/namespaces/{self.namespace}/pods"

    async def _apply(self, name: str, url: str | None) -> None:
        old = self._pods.pop(name, None)
        if url is not None:
            self._pods[name] = url
        if old and old != url and old not in self._pods.values():
            await self.pool.remove(old)
        if url and url != old:
            await self.pool.add(url)

    async def relist(self) -> str:
        """Full LIST: reconcile the pool with the Ready pods; returns the resourceVersion to watch from."""
        assert self._session is not None
        async with self._session.get(self._pods_path, params={"labelSelector": self.selector}) as r:
            r.raise_for_status()
            body = await r.json()
        seen = {p["metadata"]["name"]: self._url(p) for p in body.get("items", [])}
        for name in [n for n in self._pods if n not in seen]:
            await self._apply(name, None)
        for name, url in seen.items():
            await self._apply(name, url)
        return str(body.get("metadata", {}).get("resourceVersion", ""))

    async def _watch(self, resource_version: str) -> None:
        assert self._session is not None
        params = {"labelSelector": self.selector, "watch": "true", "timeoutSeconds": str(int(self.resync_s))}
        if resource_version and resource_version.isdigit():
            params["resourceVersion"] = resource_version
        timeout = aiohttp.ClientTimeout(total=self.resync_s + 10)
        async with self._session.get(self._pods_path, params=params, timeout=timeout) as r:
            r.raise_for_status()
            async for line in r.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                pod = event.get("object", {})
                name = pod.get("metadata", {}).get("name")
                if event.get("type") == "ERROR" or not name:
                    return
                url = None if event.get("type") == "DELETED" else self._url(pod)
                await self._apply(name, url)

    async def _run(self) -> None:
        """Watch, and relist every `resync_s` whatever the server does, so a lost DELETED event heals."""
        while True:
            try:
                resource_version = await self.relist()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._watch(resource_version), self.resync_s)
            except (TimeoutError, aiohttp.ClientError, ValueError) as e:
                log.warning("kubernetes discovery error; relisting", extra={"error": str(e)[:200]})
                await asyncio.sleep(1.0)

    async def start(self) -> None:
        self._session = self._open_session()
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            await self.relist()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session:
            await self._session.close()


def default_api_url() -> str:
    import os

    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    return f"https://{host}:{port}" if host else "http://127.0.0.1:8001"  # in cluster, else `kubectl proxy`


def make_discovery(args: argparse.Namespace, pool: WorkerPool, static: Sequence[str]) -> Discovery:
    if args.discovery == "kubernetes":
        api_url = getattr(args, "kube_api_url", None) or default_api_url()
        return KubernetesDiscovery(pool, api_url, args.namespace, args.selector, args.worker_port)
    return StaticDiscovery(pool, static)
