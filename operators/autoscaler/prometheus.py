"""A small async client for Prometheus' instant-query API (`/api/v1/query`)."""

from __future__ import annotations

import math
from typing import Any

import aiohttp


class PrometheusError(Exception):
    """Prometheus could not be reached or refused the query."""


class PrometheusClient:
    """Instant queries over one shared aiohttp session; build it in main, close it on cleanup."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def query(self, base_url: str, promql: str) -> float | None:
        """The single value the query returns; None when it returns nothing or NaN."""
        url = base_url.rstrip("/") + "/api/v1/query"
        try:
            async with self._get_session().get(url, params={"query": promql}) as response:
                payload = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise PrometheusError(f"{url}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(payload, dict) or payload.get("status") != "success":
            error = payload.get("error") if isinstance(payload, dict) else payload
            raise PrometheusError(f"{url}: query {promql!r} failed: {error}")
        return parse_value(payload.get("data", {}), promql)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily so that it belongs to the operator's running loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session


def parse_value(data: dict[str, Any], promql: str) -> float | None:
    """One number out of a vector or scalar result; several series are an error in the query."""
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type == "scalar" and isinstance(result, list):
        return _number(result[1])
    if result_type != "vector" or not isinstance(result, list):
        raise PrometheusError(f"query {promql!r} returned {result_type}, expected a vector or scalar")
    if not result:
        return None
    if len(result) > 1:
        raise PrometheusError(f"query {promql!r} returned {len(result)} series, expected one: aggregate it")
    return _number(result[0]["value"][1])


def _number(raw: Any) -> float | None:
    value = float(raw)
    return value if math.isfinite(value) else None
