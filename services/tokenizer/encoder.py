"""Encoding off the event loop: concurrent requests grouped into `encode_batch` calls, and an LRU of recent texts."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tokenizers import Encoding, Tokenizer

from services.tokenizer.metrics import TokenizerMetrics

Offsets = list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class EncodedText:
    """One text's token ids, and its character offsets when they were asked for. Never mutated once made."""

    ids: list[int]
    offsets: Offsets | None = None


@dataclass(frozen=True, slots=True)
class EncodeKey:
    """Requests that can share one `encode_batch` call."""

    add_special_tokens: bool
    with_offsets: bool


class PromptCache:
    """LRU of recent texts' encodings, bounded by entries and by the tokens held. Event-loop thread only."""

    def __init__(self, max_entries: int, max_tokens: int) -> None:
        self._entries: OrderedDict[tuple[str, bool], EncodedText] = OrderedDict()
        self._max_entries = max_entries
        self._max_tokens = max_tokens
        self._num_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, text: str, add_special_tokens: bool, with_offsets: bool) -> EncodedText | None:
        entry = self._entries.get((text, add_special_tokens))
        if entry is None or (with_offsets and entry.offsets is None):
            return None
        self._entries.move_to_end((text, add_special_tokens))
        return entry

    def put(self, text: str, add_special_tokens: bool, encoded: EncodedText) -> None:
        if self._max_entries <= 0 or len(encoded.ids) > self._max_tokens:
            return
        key = (text, add_special_tokens)
        if (old := self._entries.pop(key, None)) is not None:
            self._num_tokens -= len(old.ids)
        self._entries[key] = encoded
        self._num_tokens += len(encoded.ids)
        while len(self._entries) > self._max_entries or self._num_tokens > self._max_tokens:
            _, evicted = self._entries.popitem(last=False)
            self._num_tokens -= len(evicted.ids)


@dataclass(slots=True)
class _Job:
    key: EncodeKey
    texts: list[str]
    future: asyncio.Future[list[EncodedText]]
    enqueued_at: float = field(default_factory=time.perf_counter)


def _to_encoded(encodings: list[Encoding], with_offsets: bool) -> list[EncodedText]:
    if with_offsets:
        return [EncodedText(e.ids, e.offsets) for e in encodings]
    return [EncodedText(e.ids) for e in encodings]


class BatchEncoder:
    """Groups concurrent encode requests into one `encode_batch` at a time on a worker thread.

    While a batch runs (the Rust side releases the GIL and uses its own threads), new requests queue; when it
    finishes, everything queued with the same options (up to `max_batch_texts`) goes in the next call. No timer:
    a lone request is encoded at once.
    """

    def __init__(
        self, tokenizer: Tokenizer, cache: PromptCache, metrics: TokenizerMetrics, max_batch_texts: int = 4096
    ) -> None:
        self._tokenizer = tokenizer
        self._cache = cache
        self._metrics = metrics
        self._max_batch_texts = max_batch_texts
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenizer-encode")
        self._queue: deque[_Job] = deque()
        self._is_busy = False

    async def encode(
        self, texts: Sequence[str], add_special_tokens: bool, with_offsets: bool = False
    ) -> list[EncodedText]:
        """Encodings of `texts` in order, from the cache where possible."""
        results: list[EncodedText | None] = [self._cache.get(t, add_special_tokens, with_offsets) for t in texts]
        missing = [i for i, r in enumerate(results) if r is None]
        self._metrics.cache_hits.inc(len(texts) - len(missing))
        self._metrics.cache_misses.inc(len(missing))
        if missing:
            loop = asyncio.get_running_loop()
            job = _Job(EncodeKey(add_special_tokens, with_offsets), [texts[i] for i in missing], loop.create_future())
            self._queue.append(job)
            self._metrics.queued_texts.inc(len(job.texts))
            self._start_next()
            for i, encoded in zip(missing, await job.future, strict=True):
                results[i] = encoded
        return [r for r in results if r is not None]

    async def decode(self, sequences: list[list[int]], skip_special_tokens: bool) -> list[str]:
        """`decode_batch` on the encode thread (after the batches already handed to it)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._tokenizer.decode_batch, sequences, skip_special_tokens)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _take_batch(self) -> list[_Job]:
        """The oldest job plus every queued job with the same options, up to max_batch_texts texts in all."""
        first = self._queue.popleft()
        batch, num_texts, rest = [first], len(first.texts), deque[_Job]()
        while self._queue:
            job = self._queue.popleft()
            if job.key == first.key and num_texts + len(job.texts) <= self._max_batch_texts:
                batch.append(job)
                num_texts += len(job.texts)
            else:
                rest.append(job)
        self._queue = rest
        return batch

    def _drop_cancelled(self) -> None:
        cancelled = [job for job in self._queue if job.future.done()]
        if cancelled:
            self._queue = deque(job for job in self._queue if not job.future.done())
            self._metrics.queued_texts.dec(sum(len(job.texts) for job in cancelled))

    def _start_next(self) -> None:
        self._drop_cancelled()
        if self._is_busy or not self._queue:
            return
        self._is_busy = True
        batch = self._take_batch()
        texts = [t for job in batch for t in job.texts]
        now = time.perf_counter()
        for job in batch:
            self._metrics.queue_wait.observe(now - job.enqueued_at)
        self._metrics.queued_texts.dec(len(texts))
        key = batch[0].key
        running = asyncio.get_running_loop().run_in_executor(self._executor, self._encode_texts, texts, key)
        running.add_done_callback(lambda done: self._finish(batch, done))

    def _encode_texts(self, texts: list[str], key: EncodeKey) -> list[EncodedText]:
        """On the worker thread: one `encode_batch` (GIL released inside), then the ids as Python lists."""
        start = time.perf_counter()
        if key.with_offsets:
            encodings = self._tokenizer.encode_batch(texts, add_special_tokens=key.add_special_tokens)
        else:
            encodings = self._tokenizer.encode_batch_fast(texts, add_special_tokens=key.add_special_tokens)
        encoded = _to_encoded(encodings, key.with_offsets)
        self._metrics.encode_duration.observe(time.perf_counter() - start)
        self._metrics.batch_texts.observe(len(texts))
        return encoded

    def _finish(self, batch: list[_Job], done: asyncio.Future[list[EncodedText]]) -> None:
        self._is_busy = False
        error = done.exception() if not done.cancelled() else asyncio.CancelledError()
        encoded = done.result() if error is None else []
        start = 0
        for job in batch:
            part = encoded[start : start + len(job.texts)]
            start += len(job.texts)
            if error is None:
                for text, item in zip(job.texts, part, strict=True):
                    self._cache.put(text, job.key.add_special_tokens, item)
            if job.future.done():
                continue
            if error is None:
                job.future.set_result(part)
            else:
                job.future.set_exception(error)
        self._start_next()
