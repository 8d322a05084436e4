"""Continuous batching with chunked prefill: a per-step token budget, decode the running ones, preempt when full."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from services.worker.engines.torch.block_manager import BlockManager
from services.worker.engines.torch.sequence import SeqStatus, Sequence


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_running_requests: int = 64
    max_batch_tokens: int = 8192  # tokens fed in one step; a longer prompt is fed in chunks over several steps
    decode_lookahead_tokens: int = 0  # extra KV slots a decode step writes past the sequence (1 with MTP)
    attention_context: float = 0.0  # a prompt token at context c takes 1 + c / this of the budget (0: 1)
    token_multiple: int = 1  # a mixed step's prompt chunks grow to fill its tokens up to a multiple of this


@dataclass(frozen=True, slots=True)
class Batch:
    seqs: list[Sequence]
    is_prefill: bool


class Scheduler:
    """A step is all decode, or mixed: every decoding sequence's next token plus prompt chunks (chunked
    prefill, vLLM's and SGLang's default) up to `max_batch_tokens`, so a long prompt neither stalls the
    running streams for its whole prefill nor waits for them to finish.

    With `attention_context` A the budget counts a prompt token fed at context c as 1 + c / A tokens: its
    attention over c keys costs c / A of its linears' time. A long prompt's late chunks, each of whose
    tokens attends to the whole prompt before it, are then smaller than its early ones, so every mixed
    step costs about the same: the running streams' worst gap is the same as with the early chunks'
    size throughout, and the prompt needs fewer steps (each step also carries the streams' decode).

    With `token_multiple` (the engine pads prefill and mixed steps to that many tokens to replay a graph)
    the last prompt chunk that can grows into the padding: those rows are computed either way.

    A sequence's `num_scheduled_tokens` is what this step feeds of it; a prompt whose chunk ends
    before its last token emits nothing this step. When a step has no room for a sequence's next
    tokens, the newest running sequence is preempted: its blocks are freed (their computed prefix
    stays cached) and it is re-prefilled later.
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
        if self.waiting or any(not _is_decoding(s) for s in self.running):
            batch = self._schedule_mixed()
            if batch is not None:
                return batch
        return self._schedule_decode()

    def finish(self, seq: Sequence) -> None:
        """Called once a sequence has finished: free its blocks."""
        self._drop(seq)

    def _drop(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.free_seq(seq)

    def _schedule_mixed(self) -> Batch | None:
        """Decoding sequences first (one token each), then unfinished prompts, then new ones, within the budget."""
        decoding = self._reserve([s for s in self.running if _is_decoding(s)])
        budget = max(self.cfg.max_batch_tokens - len(decoding), self.cfg.max_batch_tokens // 4, 1)  # prompts progress
        prompts: list[Sequence] = []
        for seq in [s for s in self.running if not _is_decoding(s)]:
            if budget <= 0:
                break
            budget -= self._chunk(seq, budget)
            prompts.append(seq)
        while budget > 0 and self.waiting and len(self.running) < self.cfg.max_running_requests:
            seq = self.waiting[0]
            if not self.blocks.can_allocate(seq):
                break
            self.blocks.allocate(seq)
            seq.status = SeqStatus.RUNNING
            self.running.append(self.waiting.popleft())
            budget -= self._chunk(seq, budget)
            prompts.append(seq)
        if not prompts:
            return None
        for seq in decoding:
            seq.num_scheduled_tokens = 1
        self._fill(prompts, -(len(decoding) + sum(s.num_scheduled_tokens for s in prompts)) % self.cfg.token_multiple)
        return Batch(decoding + prompts, is_prefill=True)

    def _chunk(self, seq: Sequence, budget: int) -> int:
        """Schedule as many of the prompt's pending tokens as `budget` pays for (at least one); their
        blocks become shareable now. Returns what they took of the budget."""
        start, context = seq.num_computed_tokens, self.cfg.attention_context
        per_token = 1.0 + start / context if context else 1.0
        num = min(max(int(budget / per_token), 1), seq.num_tokens - start)
        seq.num_scheduled_tokens = num
        self.blocks.mark_ready(seq, start + num)
        return math.ceil(num * per_token)

    def _fill(self, prompts: list[Sequence], spare: int) -> None:
        """Grow the latest prompt chunks by up to `spare` tokens in all (the step's padding rows)."""
        for seq in reversed(prompts):
            if spare <= 0:
                break
            end = seq.num_computed_tokens + seq.num_scheduled_tokens
            more = min(spare, seq.num_tokens - end)
            seq.num_scheduled_tokens += more
            self.blocks.mark_ready(seq, end + more)
            spare -= more

    def _reserve(self, seqs: list[Sequence]) -> list[Sequence]:
        """Slots for each sequence's next decode tokens, preempting the newest running ones when short."""
        batch: list[Sequence] = []
        pending = list(seqs)
        while pending:
            seq = pending.pop(0)
            while not self.blocks.ensure_slots(seq, seq.num_tokens + self.cfg.decode_lookahead_tokens):
                victim = pending.pop() if pending else seq
                self._preempt(victim)
                if victim is seq:
                    break
            else:
                batch.append(seq)
        return batch

    def _schedule_decode(self) -> Batch | None:
        batch = self._reserve([s for s in self.running if _is_decoding(s)])
        for seq in batch:
            seq.num_scheduled_tokens = 1
        return Batch(batch, is_prefill=False) if batch else None

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free_seq(seq)
        seq.reset_for_recompute()
        self.waiting.appendleft(seq)
        self.num_preemptions += 1


def _is_decoding(seq: Sequence) -> bool:
    """Its whole prompt is in the cache: each step feeds just the newest token."""
    return seq.num_computed_tokens >= seq.num_tokens - 1
