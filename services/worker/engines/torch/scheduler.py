"""Continuous batching: admit waiting sequences under a token budget, decode the running ones, preempt when full."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from services.worker.engines.torch.block_manager import BlockManager
from services.worker.engines.torch.sequence import SeqStatus, Sequence


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_running_requests: int = 64
    max_batch_tokens: int = 8192  # prompt tokens fed in one prefill step (a longer prompt runs alone)
    decode_lookahead_tokens: int = 0  # extra KV slots a decode step writes past the sequence (1 with MTP)


@dataclass(frozen=True, slots=True)
class Batch:
    seqs: list[Sequence]
    is_prefill: bool


class Scheduler:
    """nano-vllm's policy: a step is all prefill (new sequences first) or all decode.

    When a decode step has no room for a sequence's next tokens, the newest running sequence is
    preempted: its blocks are freed (their prefix stays cached) and it is re-prefilled later.
    """

    def __init__(self, cfg: SchedulerConfig, blocks: BlockManager) -> None:
        self.cfg = cfg
        self.blocks = blocks
        self.waiting: deque[Sequence] = deque()
        self.running: deque[Sequence] = deque()
        self.num_preemptions = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def remove(self, request_id: str) -> list[Sequence]:
        """Take a request's unfinished sequences out of both queues and free their blocks."""
        found = [s for s in (*self.waiting, *self.running) if s.request_id == request_id]
        for seq in found:
            self._drop(seq)
        return found

    def schedule(self) -> Batch | None:
        return self._schedule_prefill() or self._schedule_decode()

    def finish(self, seq: Sequence) -> None:
        """Called once a sequence has finished: free its blocks."""
        self._drop(seq)

    def _drop(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.free_seq(seq)

    def _schedule_prefill(self) -> Batch | None:
        batch: list[Sequence] = []
        num_batch_tokens = 0
        while self.waiting and len(self.running) < self.cfg.max_running_requests:
            seq = self.waiting[0]
            num_new = seq.num_tokens - max(0, seq.num_computed_tokens)
            if batch and num_batch_tokens + num_new > self.cfg.max_batch_tokens:
                break
            if not self.blocks.can_allocate(seq):
                break
            self.blocks.allocate(seq)
            num_batch_tokens += seq.num_tokens - seq.num_computed_tokens
            seq.status = SeqStatus.RUNNING
            self.running.append(self.waiting.popleft())
            batch.append(seq)
        return Batch(batch, is_prefill=True) if batch else None

    def _schedule_decode(self) -> Batch | None:
        batch: list[Sequence] = []
        pending = list(self.running)
        while pending:
            seq = pending.pop(0)
            while not self.blocks.ensure_slots(seq, seq.num_tokens + self.cfg.decode_lookahead_tokens):
                victim = pending.pop() if pending else seq
                self._preempt(victim)
                if victim is seq:
                    break
            else:
                batch.append(seq)
        return Batch(batch, is_prefill=False) if batch else None

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free_seq(seq)
        seq.reset_for_recompute()
        self.waiting.appendleft(seq)
        self.num_preemptions += 1
