"""The simulator's prefix cache: page matching, sharing, LRU eviction (children first)."""

from __future__ import annotations

from services.worker.engines.sim.prefix_cache import PrefixCache


def test_matches_the_longest_cached_prefix_in_whole_pages() -> None:
    cache = PrefixCache(page_size=4)
    keys = cache.page_keys(list(range(10)))  # 2 full pages; the last 2 tokens are not cacheable
    assert len(keys) == 2
    cache.acquire(keys)
    assert cache.match(cache.page_keys([*range(8), 99, 98, 97, 96])) == 2
    assert cache.match(cache.page_keys([0, 1, 2, 99, 4, 5, 6, 7])) == 0  # a change in page 1 breaks the chain
    assert cache.cached_tokens == 8 and cache.evictable_tokens == 0


def test_held_pages_are_never_evicted_and_released_ones_go_lru() -> None:
    cache = PrefixCache(page_size=2)
    a, b = cache.page_keys([1, 2, 3, 4]), cache.page_keys([5, 6, 7, 8])
    cache.acquire(a)
    cache.acquire(b)
    cache.release(a)
    assert cache.evict(100) == 4  # only a's two pages were free
    assert cache.match(a) == 0 and cache.match(b) == 2
    cache.release(b)
    cache.acquire(cache.page_keys([1, 2]))  # touch a new page after b: b is older
    cache.release(cache.page_keys([1, 2]))
    assert cache.evict(2) == 2
    assert cache.match(b) == 1  # b's child page went first, its parent stays matchable


def test_shared_pages_are_counted_once_and_clear_refuses_while_held() -> None:
    cache = PrefixCache(page_size=2)
    keys = cache.page_keys([1, 2, 3, 4])
    assert cache.acquire(keys) == 2 and cache.acquire(keys) == 0
    assert cache.cached_tokens == 4
    assert not cache.clear()
    cache.release(keys)
    cache.release(keys)
    assert cache.clear() and cache.cached_tokens == 0
