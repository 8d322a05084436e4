"""The Overview and Workers dashboards: the router's traffic and latency, the tokenizer, the worker pools."""

from __future__ import annotations

from grafana import NS, POOL, Panel, Query, quantiles, rate, row, series, stat

ROUTER_REQ = "mimo_router_requests_total"


def overview() -> list[Panel]:
    errors = rate(ROUTER_REQ, f'{NS}, code!="OK"')
    return [
        stat("Requests/s", "gRPC calls the router answers, all methods.", rate(ROUTER_REQ, NS), "reqps"),
        stat(
            "Errors",
            "Share of router calls that did not end OK (client errors, rejections, cancels included).",
            f"({errors} or vector(0)) / {rate(ROUTER_REQ, NS)}",
            "percentunit",
        ),
        stat(
            "p90 time to first token",
            "Request arrival at the router to the first generated token.",
            quantiles("mimo_router_time_to_first_token_seconds", NS, qs=(0.9,))[0].expr,
            "s",
        ),
        stat("Tokens/s", "Completion tokens returned to clients.", rate("mimo_router_generated_tokens_total", NS)),
        stat(
            "Ready workers",
            "Workers the router considers ready (deduplicated over router replicas).",
            f"sum(max by (worker) (mimo_router_worker_ready{{{NS}}}))",
        ),
        stat("In flight", "Requests admitted and not finished.", f"sum(mimo_router_in_flight_requests{{{NS}}})"),
        row("Requests"),
        series(
            "Requests/s by method and code",
            "Router calls per method and final gRPC status.",
            Query(rate(ROUTER_REQ, NS, "method, code"), "{{method}} {{code}}"),
            unit="reqps",
        ),
        series(
            "Errors and rejections",
            "Calls that did not end OK, by status; requests refused by admission control, by reason.",
            Query(rate(ROUTER_REQ, f'{NS}, code!="OK"', "code"), "{{code}}"),
            Query(rate("mimo_router_rejected_requests_total", NS, "reason"), "rejected: {{reason}}"),
            unit="reqps",
        ),
        series(
            "In flight and queued",
            "Requests admitted (in flight) and waiting for admission (queued), over all router replicas.",
            Query(f"sum(mimo_router_in_flight_requests{{{NS}}})", "in flight"),
            Query(f"sum(mimo_router_queued_requests{{{NS}}})", "queued"),
        ),
        series(
            "Admission queue time",
            "Time requests waited for admission.",
            *quantiles("mimo_router_queue_time_seconds", NS, qs=(0.5, 0.99)),
            unit="s",
        ),
        row("Latency"),
        series(
            "Time to first token",
            "Request arrival to the first token.",
            *quantiles("mimo_router_time_to_first_token_seconds", NS),
            unit="s",
        ),
        series(
            "Inter-token latency",
            "Gap between streamed token batches.",
            *quantiles("mimo_router_inter_token_latency_seconds", NS),
            unit="s",
        ),
        series(
            "End-to-end latency",
            "Request arrival to the last token, by method.",
            *quantiles("mimo_router_end_to_end_latency_seconds", NS, by="method", qs=(0.5, 0.99)),
            unit="s",
        ),
        series(
            "Tokens/s",
            "Completion tokens returned to clients and prompt tokens sent to workers.",
            Query(rate("mimo_router_generated_tokens_total", NS), "completion"),
            Query(rate("mimo_router_prompt_tokens_total", NS), "prompt"),
        ),
        row("Tokenizer service"),
        series(
            "Tokenizer requests/s",
            "Calls to the tokenizer service by method.",
            Query(rate("mimo_tokenizer_requests_total", NS, "method"), "{{method}}"),
            unit="reqps",
        ),
        series(
            "Tokenizer latency (p90)",
            "Tokenizer call latency by method.",
            *quantiles("mimo_tokenizer_request_duration_seconds", NS, by="method", qs=(0.9,)),
            unit="s",
        ),
        series(
            "Tokenizer cache hit ratio",
            "Texts whose ids came from the recent-prompt cache.",
            Query(
                f"{rate('mimo_tokenizer_cache_hits_total', NS)} / ({rate('mimo_tokenizer_cache_hits_total', NS)}"
                f" + {rate('mimo_tokenizer_cache_misses_total', NS)})",
                "hit ratio",
            ),
            unit="percentunit",
            max_value=1,
        ),
        series(
            "Tokens tokenized/s",
            "Tokens produced or consumed by the tokenizer service, by operation.",
            Query(rate("mimo_tokenizer_tokens_total", NS, "op"), "{{op}}"),
        ),
    ]


def workers() -> list[Panel]:
    by_worker = "sum by (instance) ({})"
    return [
        stat("Workers up", "Worker metrics endpoints Prometheus reaches.", f'sum(up{{job="mimo-worker", {POOL}}})'),
        stat("Running", "Requests in the running batches.", f"sum(mimo_worker_running_requests{{{POOL}}})"),
        stat("Waiting", "Requests waiting for a batch slot or KV.", f"sum(mimo_worker_waiting_requests{{{POOL}}})"),
        stat("KV usage", "Mean KV cache usage.", f"avg(mimo_worker_kv_usage_ratio{{{POOL}}})", "percentunit"),
        stat(
            "Prefix hits",
            "Prompt tokens served from the prefix cache.",
            f"{rate('mimo_worker_cached_prompt_tokens_total', POOL)} / {rate('mimo_worker_prompt_tokens_total', POOL)}",
            "percentunit",
        ),
        stat(
            "MTP acceptance",
            "Accepted / proposed MTP draft tokens (MiMo's MTP layer accepts about 90%).",
            f"{rate('mimo_worker_spec_accepted_tokens_total', POOL)} / {rate('mimo_worker_spec_draft_tokens_total', POOL)}",
            "percentunit",
        ),
        row("Load"),
        series(
            "Running requests",
            "Requests in each worker's running batch.",
            Query(by_worker.format(f"mimo_worker_running_requests{{{POOL}}}"), "{{instance}}"),
        ),
        series(
            "Waiting requests (queue)",
            "Requests waiting for admission on each worker; the operator's WaitingRequests metric sums them.",
            Query(by_worker.format(f"mimo_worker_waiting_requests{{{POOL}}}"), "{{instance}}"),
        ),
        series(
            "KV cache usage",
            "Used KV cache tokens / capacity, per worker; the operator's KVCacheUsage metric averages them.",
            Query(by_worker.format(f"mimo_worker_kv_usage_ratio{{{POOL}}}"), "{{instance}}"),
            unit="percentunit",
            max_value=1,
        ),
        series(
            "Prefix cache hits",
            "Cached prompt tokens / prompt tokens: over the window per pool, and since start per worker.",
            Query(
                f"{rate('mimo_worker_cached_prompt_tokens_total', POOL, 'pool')}"
                f" / {rate('mimo_worker_prompt_tokens_total', POOL, 'pool')}",
                "{{pool}} (window)",
            ),
            Query(by_worker.format(f"mimo_worker_prefix_cache_hit_ratio{{{POOL}}}"), "{{instance}} (since start)"),
            unit="percentunit",
            max_value=1,
        ),
        row("Speculative decoding and throughput"),
        series(
            "MTP acceptance rate",
            "Accepted / proposed draft tokens per worker; tokens per step is 1 + this rate.",
            Query(
                f"{rate('mimo_worker_spec_accepted_tokens_total', POOL, 'instance')}"
                f" / {rate('mimo_worker_spec_draft_tokens_total', POOL, 'instance')}",
                "{{instance}}",
            ),
            unit="percentunit",
            max_value=1,
        ),
        series(
            "Generated tokens/s",
            "Output tokens per worker.",
            Query(rate("mimo_worker_generated_tokens_total", POOL, "instance"), "{{instance}}"),
            stacked=True,
        ),
        series(
            "Worker time to first token",
            "Generate call to first token, on the workers (no router queueing).",
            *quantiles("mimo_worker_time_to_first_token_seconds", POOL, qs=(0.5, 0.9)),
            unit="s",
        ),
        series(
            "Worker inter-token latency",
            "Time between token chunks of one sample (with MTP a chunk may hold two tokens).",
            *quantiles("mimo_worker_inter_token_latency_seconds", POOL, qs=(0.5, 0.9)),
            unit="s",
        ),
        series(
            "Finished samples/s by reason",
            "stop, length or abort.",
            Query(rate("mimo_worker_requests_finished_total", POOL, "reason"), "{{reason}}"),
        ),
        row("The router's view"),
        series(
            "Requests in flight per worker",
            "Samples the routers have in flight on each worker.",
            Query(f"sum by (worker) (mimo_router_worker_in_flight_requests{{{NS}}})", "{{worker}}"),
        ),
        series(
            "Circuit breaker state",
            "0 closed, 1 half-open, 2 open (worst over router replicas).",
            Query(f"max by (worker) (mimo_router_worker_circuit_state{{{NS}}})", "{{worker}}"),
        ),
        series(
            "Routing decisions/s",
            "By policy and reason (prefix match, least load, ...).",
            Query(rate("mimo_router_routing_decisions_total", NS, "policy, reason"), "{{policy}}: {{reason}}"),
        ),
        series(
            "Prefix match of the chosen worker",
            "Share of the prompt found in the chosen worker's prefix tree.",
            *quantiles("mimo_router_prefix_match_ratio", NS, qs=(0.5, 0.9)),
            unit="percentunit",
            max_value=1,
        ),
    ]
