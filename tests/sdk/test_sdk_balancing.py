"""What the SDK README says about balancing across router replicas: one client, several addresses, and gRPC's
round_robin policy spread the calls (over loopback here; a headless Service's dns:/// target in a cluster)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.sdk_api import Api
from tests.support.sdk_fakes import FakeServer

CALLS = 40


@pytest.fixture
def second() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.stop()


async def test_round_robin_spreads_calls_over_every_replica(
    make_api: Callable[..., Api], fake: FakeServer, second: FakeServer
) -> None:
    target = f"ipv4:{fake.target},{second.target}"
    api = make_api(target=target, channel_options=[("grpc.lb_policy_name", "round_robin")])
    for _ in range(CALLS):
        assert await api.call("count_tokens", "abc") == 3
    counts = [fake.script.calls["CountTokens"], second.script.calls["CountTokens"]]
    assert sum(counts) == CALLS and min(counts) >= CALLS // 4, counts


async def test_without_the_policy_one_replica_takes_everything(
    make_api: Callable[..., Api], fake: FakeServer, second: FakeServer
) -> None:
    api = make_api(target=f"ipv4:{fake.target},{second.target}")  # gRPC's default: pick_first
    for _ in range(CALLS):
        await api.call("count_tokens", "abc")
    assert sorted([fake.script.calls["CountTokens"], second.script.calls["CountTokens"]]) == [0, CALLS]
