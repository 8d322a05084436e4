"""`mimo_worker_*` metrics, shared by every engine (declared once per process in the default registry).

The three gauges `mimo_worker_running_requests`, `mimo_worker_waiting_requests` and
`mimo_worker_kv_usage_ratio` are what the operator's PromQL reads: keep the names.
Gauges are read from the engine's `load()` at scrape time (`bind_engine`); counters and histograms are
updated by the servicer as chunks flow.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

from services.worker.engine_api import EngineLoad

TOKEN_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1, 2.5)
TTFT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

RUNNING = Gauge("mimo_worker_running_requests", "Requests in the running batch")
WAITING = Gauge("mimo_worker_waiting_requests", "Requests waiting for admission")
KV_USAGE = Gauge("mimo_worker_kv_usage_ratio", "Used KV cache tokens / KV capacity (0..1)")
PREFIX_HIT = Gauge("mimo_worker_prefix_cache_hit_ratio", "Cached prompt tokens / prompt tokens since start")
GENERATED = Counter("mimo_worker_generated_tokens", "Output tokens generated")
PROMPT = Counter("mimo_worker_prompt_tokens", "Prompt tokens received")
CACHED = Counter("mimo_worker_cached_prompt_tokens", "Prompt tokens served from the prefix cache")
TTFT = Histogram("mimo_worker_time_to_first_token_seconds", "Generate call to first token", buckets=TTFT_BUCKETS_S)
ITL = Histogram(
    "mimo_worker_inter_token_latency_seconds",
    "Time between token chunks of one sample",
    buckets=TOKEN_LATENCY_BUCKETS_S,
)
SPEC_DRAFT = Counter("mimo_worker_spec_draft_tokens", "Speculative (MTP) draft tokens proposed")
SPEC_ACCEPTED = Counter("mimo_worker_spec_accepted_tokens", "Speculative (MTP) draft tokens accepted")
FINISHED = Counter("mimo_worker_requests_finished", "Finished samples by finish reason", ["reason"])
WEIGHT_UPDATES = Counter(
    "mimo_worker_weight_updates", "Weight updates by outcome (ok, rejected, unavailable)", ["outcome"]
)
WEIGHT_VERSION = Gauge("mimo_worker_weight_version_info", "1 for the weight version this worker serves", ["version"])


def set_weight_version(version: str) -> None:
    WEIGHT_VERSION.clear()
    WEIGHT_VERSION.labels(version=version).set(1)


def bind_engine(load: Callable[[], EngineLoad]) -> None:
    """Make the gauges read `load()` at scrape time (the last engine bound in a process wins)."""
    RUNNING.set_function(lambda: load().running_requests)
    WAITING.set_function(lambda: load().waiting_requests)
    KV_USAGE.set_function(lambda: load().token_usage)
    PREFIX_HIT.set_function(lambda: load().cache_hit_rate)
