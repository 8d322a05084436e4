"""Which worker has seen which token prefix: a hash trie over fixed-size token blocks, LRU-evicted per worker.

Block i's key hashes block i's tokens together with block i-1's key, so one key names a whole prefix: the keys
form a trie, and a worker "has" a prefix of k blocks exactly when it holds keys 0..k-1.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


def block_keys(input_ids: Sequence[int], block_tokens: int) -> list[int]:
    """Chained hashes of the prompt's full blocks (a trailing partial block is not indexed)."""
    keys: list[int] = []
    key = 0
    for start in range(0, len(input_ids) - block_tokens + 1, block_tokens):
        key = hash((key, *input_ids[start : start + block_tokens]))
        keys.append(key)
    return keys


class PrefixIndex:
    """Approximates each worker's prefix cache from what the router sent it."""

    def __init__(self, block_tokens: int = 16, max_blocks_per_worker: int = 1 << 18) -> None:
        self.block_tokens = block_tokens
        self.max_blocks_per_worker = max_blocks_per_worker
        self._owners: dict[int, set[str]] = {}
        self._lru: dict[str, OrderedDict[int, None]] = {}

    def match(self, keys: Sequence[int], workers: Sequence[str]) -> dict[str, int]:
        """Number of leading blocks of `keys` each of `workers` holds."""
        depth = dict.fromkeys(workers, 0)
        alive = set(workers)
        for i, key in enumerate(keys):
            alive &= self._owners.get(key, set())
            if not alive:
                break
            for worker in alive:
                depth[worker] = i + 1
        return depth

    def insert(self, worker: str, keys: Sequence[int]) -> None:
        lru = self._lru.setdefault(worker, OrderedDict())
        for key in keys:
            if key in lru:
                lru.move_to_end(key)
                continue
            lru[key] = None
            self._owners.setdefault(key, set()).add(worker)
        while len(lru) > self.max_blocks_per_worker:
            old, _ = lru.popitem(last=False)
            self._drop(old, worker)

    def forget(self, worker: str) -> None:
        for key in self._lru.pop(worker, OrderedDict()):
            self._drop(key, worker)

    def num_blocks(self, worker: str) -> int:
        return len(self._lru.get(worker, ()))

    def _drop(self, key: int, worker: str) -> None:
        owners = self._owners.get(key)
        if owners is not None:
            owners.discard(worker)
            if not owners:
                del self._owners[key]
