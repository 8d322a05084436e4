"""The router's dispatch rules, in-process, against scripted schedulers over real gRPC (tests/support/fake_scheduler):
retry only before the first response, mid-stream failure → Unavailable naming what was produced, cancel → Abort
sent, deadline propagated, and the wait for a first routable worker."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import grpc
import pytest

from services.router.breaker import CircuitBreaker
from services.router.dispatch import Dispatcher
from services.router.domain import (
    InvalidRequest,
    Rejected,
    SampleComplete,
    Sampling,
    TokenChunk,
    Unavailable,
    WorkerRequest,
)
from services.router.policy import RoundRobin, RouteRequest
from services.router.worker_client import WorkerClient
from services.router.workers import HealthPolicy, WorkerPool
from tests.support.fake_scheduler import Script, fake_workers

SAMPLING = Sampling(temperature=0.0, top_p=1.0, top_k=-1, min_p=0.0, repetition_penalty=1.0)


def request(stream: bool = True, n: int = 1) -> WorkerRequest:
    return WorkerRequest(
        request_id="r-1",
        input_ids=(1, 2, 3),
        sampling=SAMPLING,
        n=n,
        max_new_tokens=8,
        return_logprobs=False,
        top_logprobs=0,
        stream=stream,
    )


@asynccontextmanager
async def dispatcher(*scripts: Script, max_wait_s: float = 5.0):
    async with fake_workers(*scripts) as fakes:
        pool = WorkerPool(HealthPolicy(interval_s=0.1), CircuitBreaker(), WorkerClient)
        for target, _ in fakes:
            await pool.add(target)
        pool.start()
        try:
            yield Dispatcher(pool, RoundRobin(), max_attempts=3, max_wait_s=max_wait_s), [f for _, f in fakes]
        finally:
            await pool.stop()


async def collect(d: Dispatcher, req: WorkerRequest, deadline: float | None = None):
    return [e async for e in d.generate(req, RouteRequest(list(req.input_ids)), deadline)]


async def test_a_failure_before_the_first_response_moves_to_another_worker():
    async with dispatcher(Script(fail_before_first=grpc.StatusCode.UNAVAILABLE), Script()) as (d, fakes):
        events = await collect(d, request())
    assert [e.token_ids for e in events if isinstance(e, TokenChunk)] == [(11,), (12,), (13,), (14,)]
    assert len(fakes[0].seen.requests) == 1 and len(fakes[1].seen.requests) == 1


async def test_a_full_worker_is_retried_elsewhere_and_all_full_is_rejected_with_advice():
    full = grpc.StatusCode.RESOURCE_EXHAUSTED
    async with dispatcher(Script(fail_before_first=full), Script()) as (d, _):
        assert isinstance((await collect(d, request()))[-1], SampleComplete)
    async with dispatcher(Script(fail_before_first=full), Script(fail_before_first=full)) as (d, _):
        with pytest.raises(Rejected) as e:
            await collect(d, request())
    assert e.value.retry_after_s > 0


async def test_a_failure_mid_stream_is_not_retried_and_says_what_was_produced():
    async with dispatcher(Script(fail_after_chunks=2), Script()) as (d, fakes):
        got = []
        with pytest.raises(Unavailable) as e:
            async for event in d.generate(request(), RouteRequest([1, 2, 3]), None):
                got.append(event)
    assert len(got) == 2 and "after 2 responses and 0 of 1 finished samples" in str(e.value)
    assert "127.0.0.1" not in str(e.value)  # no internal address in what the caller reads
    assert fakes[1].seen.requests == []


async def test_a_worker_refusing_the_request_is_invalid_argument_without_its_address():
    async with dispatcher(Script(fail_before_first=grpc.StatusCode.INVALID_ARGUMENT), Script()) as (d, fakes):
        with pytest.raises(InvalidRequest) as e:
            await collect(d, request())
    assert "127.0.0.1" not in str(e.value) and fakes[1].seen.requests == []


async def test_a_caller_that_leaves_gets_its_request_aborted_on_the_worker():
    async with dispatcher(Script(token_delay_s=0.2, tokens=tuple(range(20, 60)))) as (d, fakes):
        stream = d.generate(request(), RouteRequest([1, 2, 3]), None)
        first = await anext(stream)
        assert isinstance(first, TokenChunk)
        await stream.aclose()
        fake = fakes[0]
        for _ in range(200):  # the Abort is sent in the background
            if fake.seen.aborts:
                break
            await asyncio.sleep(0.02)
    assert fake.seen.aborts == ["r-1"]


async def test_the_deadline_reaches_the_worker():
    async with dispatcher(Script()) as (d, fakes):
        await collect(d, request(), deadline=time.monotonic() + 7.0)
    (remaining,) = fakes[0].seen.time_remaining_s
    assert remaining is not None and 5.0 < remaining <= 7.5


async def test_with_no_routable_worker_a_request_waits_then_names_the_states():
    async with dispatcher(Script(healthy=False), max_wait_s=0.5) as (d, _):
        started = time.monotonic()
        with pytest.raises(Unavailable) as e:
            await collect(d, request())
    assert time.monotonic() - started >= 0.5
    assert "no worker became ready within" in str(e.value) and "not_ready" in str(e.value)


async def test_a_request_sent_before_any_worker_is_ready_waits_for_one():
    script = Script(healthy=False)
    async with dispatcher(script, max_wait_s=30.0) as (d, _):
        pending = asyncio.create_task(collect(d, request()))
        await asyncio.sleep(0.3)
        assert not pending.done()
        script.healthy = True
        events = await asyncio.wait_for(pending, 20)
    assert isinstance(events[-1], SampleComplete)
