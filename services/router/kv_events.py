"""What each worker's prefix cache holds, from the workers' own KV events (SubscribeKvEvents, SMG's format).

Unlike `prefix_index` (the router's guess from what it sent), this index is the workers' truth, so
every router replica that subscribes sees the same cache state. A worker's blocks are keyed by its
hash chain, `hash((parent_hash, tuple(block_token_ids)))` with 0 before the first block (the torch
and sim engines publish exactly these), so a prompt is matched by hashing its full blocks the same
way. A subscriber follows one worker, resumes from its last sequence number after a broken stream,
and resyncs from a snapshot when it sees a gap; a worker answering UNIMPLEMENTED publishes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from smg_grpc_proto.generated import common_pb2
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.router import metrics

log = logging.getLogger(__name__)

RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)


def block_hashes(input_ids: Sequence[int], block_size: int) -> list[int]:
    """The worker-side hash chain of the prompt's full blocks."""
    hashes, h = [], 0
    for start in range(0, len(input_ids) - block_size + 1, block_size):
        h = hash((h, tuple(input_ids[start : start + block_size])))
        hashes.append(h)
    return hashes


@dataclass(slots=True)
class WorkerBlocks:
    hashes: set[int] = field(default_factory=set)
    block_size: int = 0  # 0: no block seen yet
    sequence: int = 0  # last applied batch


class KvEventIndex:
    """Per-worker sets of cached block hashes, updated batch by batch."""

    def __init__(self) -> None:
        self._workers: dict[str, WorkerBlocks] = {}

    def workers(self) -> list[str]:
        return list(self._workers)

    def sequence(self, worker: str) -> int:
        state = self._workers.get(worker)
        return state.sequence if state else 0

    def num_blocks(self, worker: str) -> int:
        state = self._workers.get(worker)
        return len(state.hashes) if state else 0

    def apply(self, worker: str, batch: common_pb2.KvEventBatch) -> bool:
        """Apply one batch; False when it leaves a gap after the last one (the caller resyncs)."""
        state = self._workers.setdefault(worker, WorkerBlocks())
        is_snapshot = bool(batch.events) and batch.events[0].WhichOneof("data") == "cleared"
        if state.sequence and batch.sequence_number > state.sequence + 1 and not is_snapshot:
            return False
        for event in batch.events:
            kind = event.WhichOneof("data")
            if kind == "stored":
                for block in event.stored.blocks:
                    state.hashes.add(block.block_hash)
                    state.block_size = block.block_size or state.block_size
            elif kind == "removed":
                state.hashes.difference_update(event.removed.block_hashes)
            elif kind == "cleared":
                state.hashes.clear()
        # A snapshot restarts the numbering (a restarted worker counts from 1 again); otherwise never go back.
        state.sequence = batch.sequence_number if is_snapshot else max(state.sequence, batch.sequence_number)
        metrics.KV_EVENT_BLOCKS.labels(worker).set(len(state.hashes))
        return True

    def forget(self, worker: str) -> None:
        self._workers.pop(worker, None)
        with contextlib.suppress(KeyError):
            metrics.KV_EVENT_BLOCKS.remove(worker)

    def match(self, input_ids: Sequence[int], workers: Sequence[str]) -> dict[str, int]:
        """Leading prompt tokens each worker holds in its cache, for the workers this index has events of."""
        out: dict[str, int] = {}
        keys_by_size: dict[int, list[int]] = {}
        for worker in workers:
            state = self._workers.get(worker)
            if state is None:
                continue
            out[worker] = 0
            if not state.block_size:
                continue
            keys = keys_by_size.setdefault(state.block_size, block_hashes(input_ids, state.block_size))
            depth = 0
            for key in keys:
                if key not in state.hashes:
                    break
                depth += 1
            out[worker] = depth * state.block_size
        return out


class KvEventFeed:
    """One subscriber per worker of a pool (started as workers join, stopped as they leave), all feeding one
    index: `--kv-events` on the router. Each subscriber has its own channel to its worker."""

    def __init__(self, index: KvEventIndex) -> None:
        self.index = index
        self._subscribers: dict[str, tuple[KvEventSubscriber, grpc.aio.Channel]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def add(self, worker: str) -> None:
        if worker in self._subscribers:
            return
        channel = grpc.aio.insecure_channel(worker)
        subscriber = KvEventSubscriber(self.index, worker, channel)
        subscriber.start()
        self._subscribers[worker] = (subscriber, channel)

    def remove(self, worker: str) -> None:
        entry = self._subscribers.pop(worker, None)
        self.index.forget(worker)
        if entry is not None:
            task = asyncio.get_running_loop().create_task(self._close(*entry))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close(subscriber: KvEventSubscriber, channel: grpc.aio.Channel) -> None:
        await subscriber.stop()
        await channel.close()

    async def stop(self) -> None:
        for worker in list(self._subscribers):
            self.remove(worker)
        await asyncio.gather(*self._closing, return_exceptions=True)


class KvEventSubscriber:
    """Follows one worker's SubscribeKvEvents stream into the index until `stop()`."""

    def __init__(self, index: KvEventIndex, worker: str, channel: grpc.aio.Channel) -> None:
        self.index, self.worker = index, worker
        self._stub = pb_grpc.SglangSchedulerStub(channel)
        self._task: asyncio.Task[None] | None = None
        self.is_supported = True  # False once the worker answered UNIMPLEMENTED
        self.num_resyncs = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"kv-events {self.worker}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        failures = 0
        while True:
            start = self.index.sequence(self.worker)
            call = self._stub.SubscribeKvEvents(common_pb2.SubscribeKvEventsRequest(start_sequence_number=start))
            try:
                async for batch in call:
                    failures = 0
                    if not self.index.apply(self.worker, batch):  # a gap: take a fresh snapshot
                        self.num_resyncs += 1
                        self.index.forget(self.worker)
                        call.cancel()
                        break
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                    self.is_supported = False
                    log.info("worker publishes no KV events", extra={"worker": self.worker})
                    return
                if e.code() != grpc.StatusCode.CANCELLED:
                    delay = RETRY_S[min(failures, len(RETRY_S) - 1)]
                    failures += 1
                    await asyncio.sleep(delay)
