"""Routing policies: each one's choice on hand-built worker states."""

from __future__ import annotations

from collections import Counter

import pytest

from services.router.breaker import CircuitBreaker
from services.router.policy import (
    CacheAware,
    CacheAwareConfig,
    LeastLoad,
    PowerOfTwo,
    RoundRobin,
    RouteRequest,
    make_policy,
)
from services.router.prefix_index import PrefixIndex, block_keys
from services.router.workers import Worker, WorkerState


def worker(url: str, in_flight: int = 0) -> Worker:
    w = Worker(url=url, client=None, breaker=CircuitBreaker())  # type: ignore[arg-type]
    w.state = WorkerState.READY
    w.in_flight = in_flight
    return w


def test_round_robin_rotates():
    ws = [worker("a"), worker("b"), worker("c")]
    p = RoundRobin()
    assert [p.select(RouteRequest([1]), ws).worker.url for _ in range(6)] == list("abcabc")


def test_least_load_picks_fewest_in_flight():
    ws = [worker("a", 5), worker("b", 1), worker("c", 3)]
    assert LeastLoad().select(RouteRequest([1]), ws).worker.url == "b"


def test_power_of_two_never_picks_the_busiest_of_three():
    ws = [worker("a", 0), worker("b", 1), worker("c", 9)]
    p = PowerOfTwo(seed=1)
    picks = Counter(p.select(RouteRequest([1]), ws).worker.url for _ in range(300))
    assert picks["c"] == 0 and picks["a"] > picks["b"] > 0


def test_prefix_index_matches_leading_blocks_only():
    idx = PrefixIndex(block_tokens=4)
    prompt = list(range(16))
    idx.insert("a", block_keys(prompt, 4))
    idx.insert("b", block_keys(prompt[:8] + [99] * 8, 4))
    depth = idx.match(block_keys(prompt, 4), ["a", "b", "c"])
    assert depth == {"a": 4, "b": 2, "c": 0}
    # the same tokens at another position are a different prefix
    assert idx.match(block_keys([99] * 8, 4), ["b"]) == {"b": 0}


def test_prefix_index_evicts_least_recently_used_blocks():
    idx = PrefixIndex(block_tokens=2, max_blocks_per_worker=3)
    old, new = [1, 2, 3, 4], [5, 6, 7, 8]
    idx.insert("a", block_keys(old, 2))
    idx.insert("a", block_keys(new, 2))
    assert idx.num_blocks("a") == 3
    assert idx.match(block_keys(new, 2), ["a"])["a"] == 2
    assert idx.match(block_keys(old, 2), ["a"])["a"] == 0  # its first block was evicted
    idx.forget("a")
    assert idx.num_blocks("a") == 0 and idx.match(block_keys(new, 2), ["a"])["a"] == 0


def test_cache_aware_sends_shared_prefix_to_the_same_worker():
    ws = [worker("a"), worker("b"), worker("c")]
    p = CacheAware(CacheAwareConfig(block_tokens=4))
    system = list(range(100, 164))  # a long shared prefix
    first = p.select(RouteRequest([*system, 1, 2, 3]), ws)
    p.on_dispatch(RouteRequest([*system, 1, 2, 3]), first.worker)
    first.worker.in_flight += 1
    again = p.select(RouteRequest([*system, 7, 8, 9]), ws)
    assert again.worker is first.worker and again.reason == "prefix_hit" and again.match_ratio > 0.9
    other = p.select(RouteRequest(list(range(500, 564))), ws)
    assert other.reason == "prefix_miss" and other.worker is not first.worker  # least loaded


def test_cache_aware_trusts_worker_kv_events_over_its_own_guess():
    """The index is the real KvEventIndex fed one real KvEventBatch (as a worker's stream delivers it)."""
    from smg_grpc_proto.generated import common_pb2

    from services.router.kv_events import KvEventIndex, block_hashes

    ws = [worker("a"), worker("b")]
    truth = KvEventIndex()
    p = CacheAware(CacheAwareConfig(block_tokens=4), truth=truth)
    prompt = list(range(100, 164))
    p.on_dispatch(RouteRequest(prompt), ws[0])  # the router's guess: "a" has it
    blocks = [common_pb2.KvBlock(block_hash=h, block_size=16) for h in block_hashes(prompt, 16)]
    cleared = common_pb2.KvCacheEvent(event_id=1, cleared=common_pb2.KvCacheCleared())
    stored = common_pb2.KvCacheEvent(event_id=2, stored=common_pb2.KvBlocksStored(blocks=blocks))
    truth.apply("a", common_pb2.KvEventBatch(sequence_number=1, events=[cleared]))  # "a" evicted it all
    truth.apply("b", common_pb2.KvEventBatch(sequence_number=1, events=[cleared, stored]))
    choice = p.select(RouteRequest([*prompt, 1]), ws)
    assert choice.worker is ws[1] and choice.reason == "prefix_hit"


def test_cache_aware_with_kv_events_keeps_its_recent_dispatches_until_events_cover_them():
    """A rollout batch routes every request before the first prefill ends: the workers have reported nothing
    for its prompt yet, so the router's own recent dispatches decide (else each sample would be a miss)."""
    from smg_grpc_proto.generated import common_pb2

    from services.router.kv_events import KvEventIndex

    ws = [worker("a"), worker("b")]
    truth = KvEventIndex()
    cleared = common_pb2.KvCacheEvent(event_id=1, cleared=common_pb2.KvCacheCleared())
    for w in ws:
        truth.apply(w.url, common_pb2.KvEventBatch(sequence_number=1, events=[cleared]))  # both publish, empty
    prompt = list(range(100, 164))
    pending = CacheAware(CacheAwareConfig(block_tokens=4, pending_s=3600), truth=truth)
    pending.on_dispatch(RouteRequest(prompt), ws[1])
    choice = pending.select(RouteRequest([*prompt, 1]), ws)
    assert choice.worker is ws[1] and choice.reason == "prefix_hit"
    events_only = CacheAware(CacheAwareConfig(block_tokens=4, pending_s=0), truth=truth)  # no pending window
    events_only.on_dispatch(RouteRequest(prompt), ws[1])
    assert events_only.select(RouteRequest([*prompt, 1]), ws).reason == "prefix_miss"


def test_cache_aware_falls_back_to_least_load_when_imbalanced():
    ws = [worker("a", 100), worker("b", 2)]
    p = CacheAware(CacheAwareConfig(block_tokens=4))
    prompt = list(range(64))
    p.on_dispatch(RouteRequest(prompt), ws[0])
    d = p.select(RouteRequest(prompt), ws)
    assert d.worker.url == "b" and d.reason == "imbalanced"


def test_cache_aware_group_key_keeps_samples_together():
    ws = [worker("a"), worker("b")]
    p = CacheAware(CacheAwareConfig(block_tokens=4))
    d = p.select(RouteRequest([1, 2], group_key="p1"), ws)
    p.on_dispatch(RouteRequest([1, 2], group_key="p1"), d.worker)
    d.worker.in_flight += 3
    assert p.select(RouteRequest([1, 2], group_key="p1"), ws).worker is d.worker
    p.forget(d.worker.url)
    assert p.select(RouteRequest([1, 2], group_key="p1"), ws).reason != "group"


def test_unknown_policy_names_the_flag():
    with pytest.raises(ValueError, match="--policy"):
        make_policy("random_walk")
