"""The simulator's prefix cache: pages of tokens keyed by a hash chain, shared by reference, LRU-evicted.

A page is the KV of `page_size` consecutive tokens; its key hashes its tokens and its parent's key, so a
prompt matches exactly the pages of its longest cached prefix (as SGLang's radix tree does, at page
granularity). Pages held by a running sequence are locked; released pages stay cached and are evicted
least recently used first, children before parents.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from services.worker.kv_events import BlocksRemoved, BlockStored, CacheCleared, KvEventLog


class PrefixCache:
    """Reference-counted pages with an LRU list of the unreferenced ones."""

    def __init__(self, page_size: int) -> None:
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.page_size = page_size
        self._refs: dict[int, int] = {}  # page key -> sequences holding it
        self._free: OrderedDict[int, None] = OrderedDict()  # unreferenced pages, least recently used first
        self.events: KvEventLog | None = None  # KV events: a page stored when added, removed when evicted

    @property
    def cached_tokens(self) -> int:
        return len(self._refs) * self.page_size

    @property
    def evictable_tokens(self) -> int:
        return len(self._free) * self.page_size

    def page_keys(self, tokens: Sequence[int]) -> list[int]:
        """The hash chain of the full pages of `tokens` (a partial last page is not cacheable)."""
        keys, key, page = [], 0, self.page_size
        for start in range(0, len(tokens) - page + 1, page):
            key = hash((key, tuple(tokens[start : start + page])))
            keys.append(key)
        return keys

    def match(self, keys: Sequence[int]) -> int:
        """How many leading pages of `keys` are cached."""
        for i, key in enumerate(keys):
            if key not in self._refs:
                return i
        return len(keys)

    def evictable_among(self, keys: Sequence[int]) -> int:
        """How many of these cached pages nobody holds (holding them takes them out of the evictable pool)."""
        return sum(1 for key in keys if self._refs.get(key) == 0)

    def acquire(self, keys: Sequence[int], tokens: Sequence[int] = ()) -> int:
        """Hold the pages (adding the missing ones; `tokens` are theirs, for KV events); returns how many were new."""
        new, page = 0, self.page_size
        for i, key in enumerate(keys):
            refs = self._refs.get(key)
            if refs is None:
                self._refs[key] = 1
                new += 1
                if self.events is not None:
                    parent = keys[i - 1] if i else None
                    self.events.record(BlockStored(key, parent, tuple(tokens[i * page : (i + 1) * page])))
            else:
                if refs == 0:
                    del self._free[key]
                self._refs[key] = refs + 1
        return new

    def release(self, keys: Sequence[int]) -> None:
        """Drop a hold; pages nobody holds become evictable (parents more recent than their children)."""
        for key in reversed(keys):
            refs = self._refs[key] - 1
            self._refs[key] = refs
            if refs == 0:
                self._free[key] = None

    def evict(self, num_tokens: int) -> int:
        """Evict unreferenced pages, least recently used first, until `num_tokens` are freed; returns freed."""
        freed = 0
        while freed < num_tokens and self._free:
            key, _ = self._free.popitem(last=False)
            del self._refs[key]
            freed += self.page_size
            if self.events is not None:
                self.events.record(BlocksRemoved((key,)))
        return freed

    def clear(self) -> bool:
        """Drop every page; refused (False) while any page is held."""
        if len(self._free) != len(self._refs):
            return False
        self._refs.clear()
        self._free.clear()
        if self.events is not None:
            self.events.record(CacheCleared())
        return True
