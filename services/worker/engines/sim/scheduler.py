"""The simulator's scheduler: one task steps the whole batch, SGLang style (prefill first, then decode).

Each iteration either prefills the waiting requests that fit (cost grows with their uncached prompt
tokens, and yields each one's first token) or runs one decode step over the running batch (cost grows
with the batch; with MTP each sample gets 1 or 2 tokens). Time advances on a deadline clock scaled by
`time_scale` (0: no waiting at all), so the event loop's own work is absorbed into the simulated step.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Iterable

from services.worker.engine_api import EngineLoad, FinishReason
from services.worker.engines.sim.prefix_cache import PrefixCache
from services.worker.engines.sim.profile import SimProfile
from services.worker.engines.sim.sequence import SimSeq, Vocabulary
from services.worker.kv_events import KvEventLog

RATE_WINDOW_S = 5.0


class SimScheduler:
    """Waiting queue, running batch, KV accounting and the step loop."""

    def __init__(self, profile: SimProfile, vocab: Vocabulary, time_scale: float = 1.0) -> None:
        self.p = profile
        self.vocab = vocab
        self.time_scale = time_scale
        self.cache = PrefixCache(profile.page_size_tokens)
        self.cache.events = self.kv_event_log = KvEventLog(profile.page_size_tokens)
        self.waiting: deque[SimSeq] = deque()
        self.running: list[SimSeq] = []
        self._prefilling: list[SimSeq] = []
        self._by_request: dict[str, list[SimSeq]] = {}
        self._num_waiting = 0
        self._waiting_uncached = 0
        self._private = 0  # KV tokens of admitted samples outside shared pages
        self._reserved = 0  # output tokens reserved by admitted samples
        self._prompt_total = 0
        self._cached_total = 0
        self._decode_seq_steps = 0
        self._decode_tokens = 0
        self._draft = 0
        self._accepted = 0
        self._tokens_out = 0
        self._rate: deque[tuple[float, int]] = deque()
        self._wake = asyncio.Event()
        self._deadline = 0.0
        self.simulated_s = 0.0  # model time spent stepping (prefill + decode), independent of time_scale
        self._task: asyncio.Task[None] | None = None

    # ---- requests in and out ----
    def has_request(self, request_id: str) -> bool:
        return request_id in self._by_request

    @property
    def num_waiting(self) -> int:
        return self._num_waiting

    def submit(self, seqs: list[SimSeq]) -> None:
        self._by_request[seqs[0].request_id] = list(seqs)
        for seq in seqs:
            seq.uncached_estimate = (
                len(seq.prompt) - self.cache.match(self.cache.page_keys(seq.prompt)) * self.p.page_size_tokens
            )
            self._enqueue(seq)
        self._wake.set()

    def _enqueue(self, seq: SimSeq, front: bool = False) -> None:
        (self.waiting.appendleft if front else self.waiting.append)(seq)
        self._num_waiting += 1
        self._waiting_uncached += seq.uncached_estimate

    def abort(self, request_id: str, notify: bool = True) -> bool:
        """End every sample of the request still in flight; True if there was one."""
        seqs = self._by_request.pop(request_id, None)
        if not seqs:
            return False
        for seq in seqs:
            seq.is_aborted = True
            if seq in self.running:
                self.running.remove(seq)
                self._release(seq, cache_output=False)
            elif seq in self._prefilling:
                self._release(seq, cache_output=False)
            else:  # waiting: skipped when it reaches the head of the queue
                self._num_waiting -= 1
                self._waiting_uncached -= seq.uncached_estimate
            if notify:
                seq.sink.put_nowait(seq.chunk([], "abort"))
        return True

    def flush(self) -> bool:
        if self.running or self._num_waiting or self._prefilling:
            return False
        cleared = self.cache.clear()
        self.kv_event_log.flush()
        return cleared

    # ---- the loop ----
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sim-scheduler")

    async def stop(self) -> None:
        for request_id in list(self._by_request):
            self.abort(request_id)
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            if not self.running and not self._num_waiting:
                self._wake.clear()
                await self._wake.wait()
                self._deadline = 0.0
                continue
            batch = self._admit()
            if batch:
                await self._advance(self.p.prefill_s(sum(len(s.context()) - s.cached_tokens for s in batch)))
                self._finish_prefill(batch)
            elif self.running:
                self._ensure_decode_room()
                await self._advance(self.p.decode_step_s(len(self.running)))
                self._decode_step()
            else:  # nothing fits and nothing runs: only aborted entries can be at the head
                self._drop_aborted_head()
                await asyncio.sleep(0)
            self.kv_event_log.flush()  # the step's KV events, one batch

    async def _advance(self, cost_s: float) -> None:
        self.simulated_s += cost_s
        if self.time_scale <= 0:
            await asyncio.sleep(0)
            return
        now = time.monotonic()
        self._deadline = max(self._deadline, now) + cost_s * self.time_scale
        await asyncio.sleep(self._deadline - now)

    # ---- admission and KV ----
    def _used_tokens(self) -> int:
        return self.cache.cached_tokens - self.cache.evictable_tokens + self._private

    def _drop_aborted_head(self) -> None:
        while self.waiting and self.waiting[0].is_aborted:
            self.waiting.popleft()

    def _admit(self) -> list[SimSeq]:
        batch: list[SimSeq] = []
        budget = self.p.max_prefill_tokens
        while self.waiting and len(self.running) + len(batch) < self.p.max_running_requests:
            seq = self.waiting[0]
            if seq.is_aborted:
                self.waiting.popleft()
                continue
            keys = self.cache.page_keys(seq.context())
            matched = self.cache.match(keys)
            cached = matched * self.p.page_size_tokens
            uncached = len(seq.context()) - cached
            reserve = math.ceil(self.p.reserve_output_ratio * (seq.max_new - len(seq.out)))
            # evictable pages count as free, except the matched ones this sample is about to hold
            relocked = self.cache.evictable_among(keys[:matched]) * self.p.page_size_tokens
            free = self.p.kv_capacity_tokens - self._used_tokens() - self._reserved - relocked
            is_first = not self.running and not batch  # always admit one, so an oversized request still runs
            if not is_first and (uncached > budget or uncached + reserve > free):
                break
            self.waiting.popleft()
            self._num_waiting -= 1
            self._waiting_uncached -= seq.uncached_estimate
            self._hold(seq, keys, cached, reserve)
            budget -= uncached
            batch.append(seq)
        self._prefilling = batch
        return batch

    def _hold(self, seq: SimSeq, keys: list[int], cached: int, reserve: int) -> None:
        self.cache.acquire(keys, seq.context())
        seq.held_pages = keys
        seq.private_tokens = len(seq.context()) - len(keys) * self.p.page_size_tokens
        seq.reserved_tokens = reserve
        self._private += seq.private_tokens
        self._reserved += reserve
        if not seq.out:  # a first admission (not a re-admission after retraction)
            seq.cached_tokens = cached
            self._prompt_total += len(seq.prompt)
            self._cached_total += cached
        self._make_room(0)

    def _make_room(self, extra_tokens: int) -> bool:
        """Evict cached pages until the KV holds `extra_tokens` more; False if it cannot."""
        over = self.cache.cached_tokens + self._private + extra_tokens - self.p.kv_capacity_tokens
        return over <= 0 or self.cache.evict(over) >= over

    def _ensure_decode_room(self) -> None:
        """Before a decode step, retract the newest samples if the KV cannot take one more step (SGLang's retract)."""
        per_step = 2 if self.p.is_mtp_enabled else 1
        while len(self.running) > 1 and not self._make_room(len(self.running) * per_step):
            seq = self.running.pop()
            self._release(seq, cache_output=True)
            seq.uncached_estimate = len(seq.context())
            self._enqueue(seq, front=True)

    def _release(self, seq: SimSeq, cache_output: bool) -> None:
        """Give back the sample's KV; its prompt and output stay cached (evictable) when `cache_output`."""
        if cache_output:
            keys = self.cache.page_keys(seq.context())
            self.cache.acquire(keys, seq.context())
            self.cache.release(keys)
        self.cache.release(seq.held_pages)
        seq.held_pages = []
        self._private -= seq.private_tokens
        self._reserved -= seq.reserved_tokens
        seq.private_tokens = seq.reserved_tokens = 0
        self._make_room(0)

    # ---- producing tokens ----
    def _finish_prefill(self, batch: Iterable[SimSeq]) -> None:
        self._prefilling = []
        for seq in batch:
            if seq.is_aborted:
                continue
            self.running.append(seq)
            if seq.max_new == 0:
                self._finish(seq, [], "length", None)
            elif not seq.out:  # prefill yields the first token; a re-admitted sample resumes decoding
                self._emit(seq, 1)

    def _decode_step(self) -> None:
        for seq in list(self.running):
            seq.steps += 1
            k = 1
            if self.p.is_mtp_enabled:
                seq.draft_tokens += 1
                self._draft += 1
                if seq.is_draft_accepted(self.p.mtp_accept_rate):
                    k = 2
                    seq.accepted_tokens += 1
                    self._accepted += 1
            self._decode_seq_steps += 1
            self._decode_tokens += self._emit(seq, k)
        self._record_rate()

    def _emit(self, seq: SimSeq, k: int) -> int:
        new: list[int] = []
        reason: FinishReason | None = None
        matched = None
        for _ in range(k):
            token, reason, matched = seq.next_token(self.vocab)
            new.append(token)
            if reason:
                break
        grown = len(new)
        seq.private_tokens += grown
        self._private += grown
        used = min(grown, seq.reserved_tokens)
        seq.reserved_tokens -= used
        self._reserved -= used
        self._tokens_out += grown
        if reason:
            self._finish(seq, new, reason, matched)
        else:
            seq.sink.put_nowait(seq.chunk(new))
        return grown

    def _finish(self, seq: SimSeq, new: list[int], reason: FinishReason, matched: int | None) -> None:
        self.running.remove(seq)
        self._release(seq, cache_output=True)
        seqs = self._by_request.get(seq.request_id)
        if seqs is not None:
            seqs.remove(seq)
            if not seqs:
                del self._by_request[seq.request_id]
        seq.sink.put_nowait(seq.chunk(new, reason, matched))

    def _record_rate(self) -> None:
        now = time.monotonic()
        self._rate.append((now, self._tokens_out))
        while self._rate and now - self._rate[0][0] > RATE_WINDOW_S:
            self._rate.popleft()

    # ---- reporting ----
    def load(self) -> EngineLoad:
        rate = 0.0
        if len(self._rate) > 1 and time.monotonic() - self._rate[-1][0] < RATE_WINDOW_S:
            (t0, n0), (t1, n1) = self._rate[0], self._rate[-1]
            rate = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
        is_mtp = self.p.is_mtp_enabled
        return EngineLoad(
            running_requests=len(self.running) + len(self._prefilling),
            waiting_requests=self._num_waiting,
            used_kv_tokens=self._used_tokens(),
            max_kv_tokens=self.p.kv_capacity_tokens,
            cache_hit_rate=self._cached_total / self._prompt_total if self._prompt_total else 0.0,
            gen_throughput_tps=rate,
            waiting_uncached_tokens=self._waiting_uncached,
            max_running_requests=self.p.max_running_requests,
            spec_accept_length=(
                self._decode_tokens / self._decode_seq_steps if self._decode_seq_steps else self.p.tokens_per_step
            )
            if is_mtp
            else None,
            spec_accept_rate=(self._accepted / self._draft if self._draft else self.p.mtp_accept_rate)
            if is_mtp
            else None,
        )
