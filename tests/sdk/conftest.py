"""Fixtures: a fake server on loopback, and `make_api` giving the sync or the asyncio client behind one interface."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from mimo_client import AsyncMimoClient, MimoClient, RetryPolicy

from tests.support.sdk_api import Api
from tests.support.sdk_fakes import FakeServer

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.stop()


@pytest.fixture(params=["sync", "async"])
async def make_api(request: pytest.FixtureRequest, fake: FakeServer) -> AsyncIterator[Callable[..., Api]]:
    """`make_api(**client_kwargs)`: a client of `fake` (unless `target` is given), sync or async by the param."""
    apis: list[Api] = []

    def make(**kwargs: Any) -> Api:
        kwargs.setdefault("target", fake.target)
        kwargs.setdefault("retry", FAST_RETRY)
        cls = AsyncMimoClient if request.param == "async" else MimoClient
        apis.append(Api(cls(**kwargs)))
        return apis[-1]

    yield make
    for api in apis:
        await api.close()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()
