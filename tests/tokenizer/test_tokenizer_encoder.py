"""The batching encoder groups concurrent requests into few encode_batch calls; the prompt cache is a bounded LRU."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from services.text.artifacts import LoadedTokenizer
from services.tokenizer.encoder import BatchEncoder, EncodedText, PromptCache
from services.tokenizer.metrics import METRICS
from tests.support.tokenizer_dirs import CORPUS


def num_batches() -> float:
    return REGISTRY.get_sample_value("mimo_tokenizer_encode_batch_texts_count") or 0.0


async def test_concurrent_requests_share_encode_batch_calls(loaded: LoadedTokenizer):
    encoder = BatchEncoder(loaded.tokenizer, PromptCache(0, 0), METRICS)
    texts = [f"{i}: {CORPUS[i % len(CORPUS)]}" for i in range(30)]
    before = num_batches()
    try:
        results = await asyncio.gather(*(encoder.encode([t], add_special_tokens=False) for t in texts))
    finally:
        encoder.close()
    # the first request starts at once; the 29 that arrive while it runs go together in the second call
    assert num_batches() - before == 2
    assert [r[0].ids for r in results] == [
        e.ids for e in loaded.tokenizer.encode_batch(texts, add_special_tokens=False)
    ]


async def test_different_options_are_not_mixed_in_one_batch(loaded: LoadedTokenizer):
    encoder = BatchEncoder(loaded.tokenizer, PromptCache(0, 0), METRICS)
    try:
        plain, with_offsets = await asyncio.gather(
            encoder.encode(CORPUS[:3], add_special_tokens=False),
            encoder.encode(CORPUS[:3], add_special_tokens=False, with_offsets=True),
        )
    finally:
        encoder.close()
    assert all(e.offsets is None for e in plain)
    assert [e.offsets for e in with_offsets] == [e.offsets for e in loaded.tokenizer.encode_batch(CORPUS[:3])]


async def test_a_cancelled_caller_does_not_break_the_others(loaded: LoadedTokenizer):
    encoder = BatchEncoder(loaded.tokenizer, PromptCache(0, 0), METRICS)
    queued_before = REGISTRY.get_sample_value("mimo_tokenizer_queued_texts")
    try:
        first = asyncio.ensure_future(encoder.encode(["a long first text " * 200], add_special_tokens=False))
        doomed = asyncio.ensure_future(encoder.encode(["doomed"], add_special_tokens=False))
        survivor = asyncio.ensure_future(encoder.encode(["survivor"], add_special_tokens=False))
        await asyncio.sleep(0)
        doomed.cancel()
        assert (await asyncio.wait_for(survivor, 10))[0].ids == loaded.tokenizer.encode("survivor").ids
        await asyncio.wait_for(first, 10)
    finally:
        encoder.close()
    assert REGISTRY.get_sample_value("mimo_tokenizer_queued_texts") == queued_before


def test_prompt_cache_evicts_least_recent_by_entries_and_tokens():
    cache = PromptCache(max_entries=2, max_tokens=10)
    cache.put("a", False, EncodedText([1, 2, 3]))
    cache.put("b", False, EncodedText([4, 5, 6]))
    assert cache.get("a", False, False) is not None  # "a" is now the most recent
    cache.put("c", False, EncodedText([7]))
    assert cache.get("b", False, False) is None and len(cache) == 2
    cache.put("d", False, EncodedText(list(range(9))))  # 9 + 1 ("c") would leave "a" over the budget
    assert cache.get("a", False, False) is None and cache.get("c", False, False) is not None
    assert cache.get("c", True, False) is None  # the options are part of the key
    assert cache.get("c", False, with_offsets=True) is None  # no offsets cached for it
