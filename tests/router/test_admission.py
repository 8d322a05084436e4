"""Admission control: slots, a priority queue with a timeout, refusal with retry advice."""

from __future__ import annotations

import asyncio

import pytest

from services.router.admission import Admission, AdmissionConfig, Rejected
from services.router.breaker import CircuitBreaker, CircuitState


async def hold(
    adm: Admission, release: asyncio.Event, priority: int = 0, log: list | None = None, name: str = ""
) -> None:
    async with adm.slot(priority):
        if log is not None:
            log.append(name)
        await release.wait()


async def test_queue_full_is_refused_with_retry_advice():
    adm = Admission(AdmissionConfig(max_in_flight=1, max_queue=1, queue_timeout_s=5))
    release = asyncio.Event()
    running = asyncio.create_task(hold(adm, release))
    await asyncio.sleep(0)
    queued = asyncio.create_task(hold(adm, release))
    await asyncio.sleep(0)
    with pytest.raises(Rejected) as e:
        async with adm.slot():
            pass
    assert e.value.reason == "queue_full" and e.value.retry_after_s > 0
    release.set()
    await asyncio.gather(running, queued)
    assert adm.in_flight == 0


async def test_queue_timeout():
    adm = Admission(AdmissionConfig(max_in_flight=1, max_queue=4, queue_timeout_s=0.1))
    release = asyncio.Event()
    running = asyncio.create_task(hold(adm, release))
    await asyncio.sleep(0)
    with pytest.raises(Rejected, match="waited"):
        async with adm.slot():
            pass
    release.set()
    await running
    assert adm.in_flight == 0 and adm.queued == 0


async def test_higher_priority_is_admitted_first():
    adm = Admission(AdmissionConfig(max_in_flight=1, max_queue=4, queue_timeout_s=5))
    first, rest = asyncio.Event(), asyncio.Event()
    order: list[str] = []
    blocker = asyncio.create_task(hold(adm, first))
    await asyncio.sleep(0)
    low = asyncio.create_task(hold(adm, rest, 0, order, "low"))
    await asyncio.sleep(0)
    high = asyncio.create_task(hold(adm, rest, 5, order, "high"))
    await asyncio.sleep(0)
    first.set()
    rest.set()
    await asyncio.gather(blocker, low, high)
    assert order == ["high", "low"]


async def test_cancelled_waiter_does_not_leak_a_slot():
    adm = Admission(AdmissionConfig(max_in_flight=1, max_queue=4, queue_timeout_s=5))
    release = asyncio.Event()
    running = asyncio.create_task(hold(adm, release))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold(adm, release))
    await asyncio.sleep(0.01)
    waiter.cancel()
    release.set()
    await running
    await asyncio.gather(waiter, return_exceptions=True)
    assert adm.in_flight == 0 and adm.queued == 0
    async with adm.slot():
        assert adm.in_flight == 1


def test_circuit_breaker_opens_half_opens_and_closes():
    b = CircuitBreaker(failure_threshold=3, success_threshold=2, open_s=10)
    for _ in range(3):
        b.record_failure(now=100.0)
    assert b.state is CircuitState.OPEN and not b.allows(now=105.0)
    assert b.allows(now=111.0) and b.state is CircuitState.HALF_OPEN
    b.record_failure(now=111.0)
    assert b.state is CircuitState.OPEN
    assert b.allows(now=122.0)
    b.record_success()
    b.record_success()
    assert b.state is CircuitState.CLOSED
