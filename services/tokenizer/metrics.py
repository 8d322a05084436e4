"""The tokenizer service's Prometheus metrics, declared once at import (requests and RPC latency come from
`services.common.metrics.rpc_metrics("tokenizer")`: mimo_tokenizer_requests_total, _request_duration_seconds)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import LATENCY_BUCKETS_S

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


@dataclass(frozen=True, slots=True)
class TokenizerMetrics:
    """Tokens and texts per operation, cache hits and misses, and the shape and cost of encode batches."""

    tokens: Counter  # labels: op = encode | decode | chat | count
    texts: Counter  # labels: op
    cache_hits: Counter
    cache_misses: Counter
    batch_texts: Histogram
    encode_duration: Histogram
    queue_wait: Histogram
    queued_texts: Gauge


METRICS = TokenizerMetrics(
    tokens=Counter("mimo_tokenizer_tokens", "Tokens produced (encode, chat, count) or consumed (decode)", ["op"]),
    texts=Counter("mimo_tokenizer_texts", "Texts encoded or decoded, or chats rendered", ["op"]),
    cache_hits=Counter("mimo_tokenizer_cache_hits", "Texts whose ids came from the recent-prompt cache"),
    cache_misses=Counter("mimo_tokenizer_cache_misses", "Texts that had to be encoded"),
    batch_texts=Histogram("mimo_tokenizer_encode_batch_texts", "Texts per encode_batch call", buckets=BATCH_BUCKETS),
    encode_duration=Histogram(
        "mimo_tokenizer_encode_duration_seconds", "Time of one encode_batch call", buckets=LATENCY_BUCKETS_S
    ),
    queue_wait=Histogram(
        "mimo_tokenizer_queue_wait_seconds", "Time a request waited for the encode thread", buckets=LATENCY_BUCKETS_S
    ),
    queued_texts=Gauge("mimo_tokenizer_queued_texts", "Texts waiting for the encode thread"),
)
