"""Kubernetes REST calls for the objects the operator owns, with the credentials kopf logged in with."""

from __future__ import annotations

from typing import Any

import aiohttp
import kopf

from operators.autoscaler.spec import GROUP, PLURAL, VERSION

MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def deployments_path(namespace: str, name: str = "") -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments" + (f"/{name}" if name else "")


def services_path(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/services" + (f"/{name}" if name else "")


def pool_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"


class KubeClient:
    """Holds the latest `kopf.ConnectionInfo` (set by the login handler) and one session for it."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None
        self._session_info: kopf.ConnectionInfo | None = None

    def use(self, info: kopf.ConnectionInfo) -> None:
        """Take the credentials of a (re-)login; the next request opens a session with them."""
        self._info = info

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self._request("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, collection_path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request("POST", collection_path, json=body)

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request("PATCH", path, json=body, headers={"Content-Type": MERGE_PATCH})

    async def apply(self, collection_path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create the object, or merge-patch it if it exists: safe to repeat."""
        try:
            return await self.create(collection_path, body)
        except KubeError as exc:
            if exc.status != 409:
                raise
        return await self.merge_patch(f"{collection_path}/{body['metadata']['name']}", body)

    async def scale(self, object_path: str, replicas: int) -> dict[str, Any]:
        """Write replicas through the object's scale subresource."""
        return await self.merge_patch(f"{object_path}/scale", {"spec": {"replicas": replicas}})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        session, server = await self._get_session()
        async with session.request(method, server.rstrip("/") + path, **kwargs) as response:
            payload = await response.json(content_type=None)
            if response.status >= 400:
                message = payload.get("message", "") if isinstance(payload, dict) else str(payload)
                raise KubeError(response.status, f"{method} {path}: {message}")
            return payload if isinstance(payload, dict) else {}

    async def _get_session(self) -> tuple[aiohttp.ClientSession, str]:
        info = self._info
        if info is None:
            raise KubeError(401, "not logged in yet")
        if self._session is None or self._session_info != info or self._session.closed:
            await self.close()
            connector = aiohttp.TCPConnector(ssl=info.as_ssl_context())
            self._session = aiohttp.ClientSession(
                connector=connector, headers=info.as_http_headers(), timeout=self._timeout
            )
            self._session_info = info
        return self._session, info.server
