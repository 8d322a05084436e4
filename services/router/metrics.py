"""Router metrics, `mimo_router_*` (per-method request counts come from the shared interceptor)."""

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import LATENCY_BUCKETS_S

TOKEN_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)

TTFT = Histogram(
    "mimo_router_time_to_first_token_seconds",
    "Request arrival to first generated token",
    ["method"],
    buckets=LATENCY_BUCKETS_S,
)
ITL = Histogram(
    "mimo_router_inter_token_latency_seconds", "Gap between streamed token batches", buckets=TOKEN_BUCKETS_S
)
E2E = Histogram(
    "mimo_router_end_to_end_latency_seconds", "Request arrival to last token", ["method"], buckets=LATENCY_BUCKETS_S
)
QUEUE_TIME = Histogram("mimo_router_queue_time_seconds", "Time waiting for admission", buckets=LATENCY_BUCKETS_S)
GENERATED_TOKENS = Counter("mimo_router_generated_tokens", "Completion tokens returned to clients")
PROMPT_TOKENS = Counter("mimo_router_prompt_tokens", "Prompt tokens sent to workers")
IN_FLIGHT = Gauge("mimo_router_in_flight_requests", "Requests admitted and not finished")
QUEUED = Gauge("mimo_router_queued_requests", "Requests waiting for admission")
REJECTED = Counter("mimo_router_rejected_requests", "Requests refused by admission control", ["reason"])
WORKER_IN_FLIGHT = Gauge("mimo_router_worker_in_flight_requests", "Samples in flight per worker", ["worker"])
WORKER_STATE = Gauge("mimo_router_worker_ready", "1 when the worker is ready for traffic", ["worker"])
CIRCUIT_STATE = Gauge("mimo_router_worker_circuit_state", "0 closed, 1 half-open, 2 open", ["worker"])
ROUTING_DECISIONS = Counter("mimo_router_routing_decisions", "Routing decisions", ["policy", "reason"])
PREFIX_MATCH = Histogram(
    "mimo_router_prefix_match_ratio",
    "Share of the prompt found in the chosen worker's prefix tree",
    buckets=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
)
RETRIES = Counter("mimo_router_retries", "Requests retried on another worker", ["reason"])
WORKER_FAILURES = Counter("mimo_router_worker_failures", "Failed worker calls", ["worker", "stage"])
HTTP_REQUESTS = Counter(
    "mimo_router_http_requests", "OpenAI HTTP API requests by route and status", ["route", "status"]
)
HTTP_LATENCY = Histogram(
    "mimo_router_http_request_duration_seconds",
    "OpenAI HTTP API request handling time",
    ["route"],
    buckets=LATENCY_BUCKETS_S,
)
WORKER_WEIGHT_VERSION = Gauge(
    "mimo_router_worker_weight_version_info", "1 for the weight version each worker reports", ["worker", "version"]
)
FLEET_WEIGHT_VERSION = Gauge(
    "mimo_router_fleet_weight_version_info", "1 for the version the fleet serves (the last update's)", ["version"]
)
WEIGHT_UPDATES = Counter(
    "mimo_router_weight_updates",
    "Fleet weight updates that took effect: ok, or partial (some workers failed)",
    ["result"],
)
WEIGHT_UPDATE_SECONDS = Histogram(
    "mimo_router_weight_update_seconds", "UpdateWeights call to every updated worker serving", buckets=LATENCY_BUCKETS_S
)
WORKERS_HELD = Gauge("mimo_router_workers_held", "Workers kept out of routing by the fleet (updating or behind)")
KV_EVENT_BLOCKS = Gauge(
    "mimo_router_kv_event_blocks", "Prefix-cache blocks each worker reports holding (--kv-events)", ["worker"]
)
