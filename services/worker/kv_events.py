"""KV-cache events of a worker (block stored / removed / cache cleared), numbered batches for SubscribeKvEvents.

The engine records events from its own thread and closes a batch per scheduler step (`flush`); the
gRPC servicer streams batches to subscribers in SMG's `KvEventBatch` format. A subscriber starting at
0, or at a sequence older than the kept history, first gets a snapshot: a batch that clears the cache
and stores every live block (parents before children), numbered with the latest sequence, then live
batches. Block hashes are the engines' hash chains (`hash((parent_hash, token_ids))`, 0 for the
first block), so anyone holding the tokens can compute the same hashes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engines record events without the gRPC protos; only the servicer converts them
    from smg_grpc_proto.generated import common_pb2

INT64 = 1 << 63


@dataclass(frozen=True, slots=True)
class BlockStored:
    block_hash: int
    parent_hash: int | None
    token_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BlocksRemoved:
    block_hashes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CacheCleared:
    pass


KvEvent = BlockStored | BlocksRemoved | CacheCleared


@dataclass(frozen=True, slots=True)
class EventBatch:
    sequence_number: int
    timestamp: float
    events: tuple[KvEvent, ...]


def to_int64(value: int) -> int:
    """Python's hash is a signed 64-bit value already; fold anything wider into int64."""
    return (value + INT64) % (2 * INT64) - INT64


class KvEventLog:
    """Thread-safe: `record`/`flush` from the engine thread, `subscribe` from the event loop."""

    def __init__(self, block_size: int, history: int = 1024) -> None:
        self.block_size = block_size
        self._lock = threading.Lock()
        self._pending: list[KvEvent] = []
        self._batches: deque[EventBatch] = deque(maxlen=history)
        self._live: dict[int, BlockStored] = {}  # insertion order: parents before children
        self._sequence = 0
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    @property
    def sequence_number(self) -> int:
        return self._sequence

    @property
    def num_live_blocks(self) -> int:
        return len(self._live)

    def record(self, event: KvEvent) -> None:
        with self._lock:
            self._pending.append(event)
            if isinstance(event, BlockStored):
                self._live[event.block_hash] = event
            elif isinstance(event, BlocksRemoved):
                for h in event.block_hashes:
                    self._live.pop(h, None)
            else:
                self._live.clear()

    def flush(self) -> None:
        """Close the step's batch (nothing when no event happened) and wake the subscribers."""
        with self._lock:
            if not self._pending:
                return
            self._sequence += 1
            self._batches.append(EventBatch(self._sequence, time.time(), tuple(self._pending)))
            self._pending = []
            waiters = list(self._waiters)
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)

    def _after(self, cursor: int) -> tuple[list[EventBatch], bool]:
        """Batches after `cursor`; True when a snapshot is due: the history no longer reaches back to it, or
        the cursor is ahead of this log (one this worker never issued: from before a restart)."""
        with self._lock:
            first = self._batches[0].sequence_number if self._batches else self._sequence + 1
            if cursor + 1 < first or cursor > self._sequence:
                live: list[KvEvent] = [CacheCleared(), *self._live.values()]
                return [EventBatch(self._sequence, time.time(), tuple(live))], True
            return [b for b in self._batches if b.sequence_number > cursor], False

    async def subscribe(self, start_sequence_number: int = 0) -> AsyncIterator[EventBatch]:
        """Every batch after `start_sequence_number` (0: a snapshot of the live blocks first), then live ones."""
        wake = asyncio.Event()
        entry = (asyncio.get_running_loop(), wake)
        with self._lock:
            self._waiters.append(entry)
            cursor = start_sequence_number
            if cursor == 0:
                cursor = -1  # force a snapshot: "start from current state"
        try:
            while True:
                wake.clear()
                batches, _ = self._after(cursor)
                for batch in batches:
                    cursor = batch.sequence_number
                    yield batch
                if not batches:
                    await wake.wait()
        finally:
            with self._lock:
                self._waiters.remove(entry)


def to_proto(batch: EventBatch, block_size: int) -> common_pb2.KvEventBatch:
    """SMG's KvEventBatch: one KvCacheEvent per event, event ids numbered within the batch from 1."""
    from smg_grpc_proto.generated import common_pb2

    events = []
    for i, event in enumerate(batch.events, start=1):
        if isinstance(event, BlockStored):
            block = common_pb2.KvBlock(
                block_hash=to_int64(event.block_hash), token_ids=list(event.token_ids), block_size=block_size
            )
            stored = common_pb2.KvBlocksStored(blocks=[block])
            if event.parent_hash is not None:
                stored.parent_block_hash = to_int64(event.parent_hash)
            events.append(common_pb2.KvCacheEvent(event_id=i, stored=stored))
        elif isinstance(event, BlocksRemoved):
            removed = common_pb2.KvBlocksRemoved(block_hashes=[to_int64(h) for h in event.block_hashes])
            events.append(common_pb2.KvCacheEvent(event_id=i, removed=removed))
        else:
            events.append(common_pb2.KvCacheEvent(event_id=i, cleared=common_pb2.KvCacheCleared()))
    return common_pb2.KvEventBatch(sequence_number=batch.sequence_number, timestamp=batch.timestamp, events=events)
