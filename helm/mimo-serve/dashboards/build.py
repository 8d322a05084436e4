"""Writes the chart's Grafana dashboards: `python helm/mimo-serve/dashboards/build.py` (tests/helm fails if stale).

Every query uses metric names defined in the code (services/*/metrics.py, services/common/metrics.py,
operators/autoscaler/metrics.py), Prometheus' `up`, or the recording rules of files/alerts.yaml
(`mimo_pool:*`); tests/helm checks both, and runs every query against a Prometheus scraping a live stack.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grafana import RATE, Panel, Query, dashboard, distribution, quantiles, row, series, stat

NS = 'namespace=~"$namespace"'
POOL = 'namespace=~"$namespace", pool=~"$pool"'
ROUTER_REQ = "mimo_router_requests_total"


def rate(metric: str, selector: str, by: str = "") -> str:
    inner = f"rate({metric}{{{selector}}}[{RATE}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


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


def rollouts() -> list[Panel]:
    def mean(metric: str) -> str:
        return f"{rate(metric + '_sum', NS)} / {rate(metric + '_count', NS)}"

    verify = "mimo_verifier_requests_total"
    return [
        stat("Samples/s", "Rollout samples finished with a reward.", rate("mimo_router_rollout_samples_total", NS)),
        stat("Mean reward", "Mean reward per sample.", mean("mimo_router_rollout_reward")),
        stat(
            "Mean pass rate",
            "Mean share of correct samples per prompt group.",
            mean("mimo_router_rollout_group_pass_rate"),
            "percentunit",
        ),
        stat(
            "p90 reward wait",
            "From a sample's last token to its reward.",
            quantiles("mimo_router_rollout_reward_wait_seconds", NS, qs=(0.9,))[0].expr,
            "s",
        ),
        stat("Verify calls/s", "Calls to the verifier.", rate(verify, NS), "reqps"),
        stat(
            "Verifier errors",
            "Share of Verify calls that ended in a server error.",
            f"({rate(verify, f'{NS}, code!~' + chr(34) + 'OK|CANCELLED|INVALID_ARGUMENT' + chr(34))} or vector(0))"
            f" / {rate(verify, NS)}",
            "percentunit",
        ),
        row("Samples and groups"),
        series(
            "Samples/s and groups/s",
            "Samples with a reward, and prompt groups finished by outcome (all correct, all wrong, mixed).",
            Query(rate("mimo_router_rollout_samples_total", NS), "samples"),
            Query(rate("mimo_router_rollout_groups_total", NS, "kind"), "groups: {{kind}}"),
        ),
        series(
            "Pass rate and reward",
            "Mean group pass rate and mean sample reward over the window.",
            Query(mean("mimo_router_rollout_group_pass_rate"), "pass rate"),
            Query(mean("mimo_router_rollout_reward"), "reward"),
            unit="percentunit",
            max_value=1,
        ),
        distribution(
            "Reward distribution",
            "Samples per reward bucket over the dashboard's time range.",
            f"sum by (le) (increase(mimo_router_rollout_reward_bucket{{{NS}}}[$__range]))",
        ),
        distribution(
            "Group pass-rate distribution",
            "Prompt groups per pass-rate bucket over the time range (GRPO learns from the mixed ones).",
            f"sum by (le) (increase(mimo_router_rollout_group_pass_rate_bucket{{{NS}}}[$__range]))",
        ),
        series(
            "Reward wait",
            "From a sample's last token to its reward (the verifier's latency as the rollout sees it).",
            *quantiles("mimo_router_rollout_reward_wait_seconds", NS),
            unit="s",
        ),
        series(
            "Early terminations/s",
            "Rollouts ended early by FIFO early termination.",
            Query(rate("mimo_router_rollout_early_terminations_total", NS), "early terminations"),
        ),
        row("Verifier"),
        series(
            "Verify calls/s by code",
            "Verifier calls by final gRPC status.",
            Query(rate(verify, NS, "method, code"), "{{method}} {{code}}"),
            unit="reqps",
        ),
        series(
            "Verifier latency",
            "Verify call latency (math checks and sandboxed code runs).",
            *quantiles("mimo_verifier_request_duration_seconds", NS, by="method"),
            unit="s",
        ),
    ]


def autoscaler() -> list[Panel]:
    ops = 'job="mimo-operator"'
    return [
        series(
            "Desired vs current replicas",
            "What the scaling rule asks for, what the pool had when last evaluated, and its bounds.",
            Query(f"mimo_operator_desired_replicas{{{POOL}}}", "{{pool}} desired"),
            Query(f"mimo_operator_current_replicas{{{POOL}}}", "{{pool}} current"),
            Query(f"mimo_pool:max_replicas{{{POOL}}}", "{{pool}} max"),
            Query(f"mimo_pool:min_replicas{{{POOL}}}", "{{pool}} min"),
        ),
        series(
            "Scaling metrics against their targets",
            "Each metric's last value (per replica for AverageValue) and its target.",
            Query(f"mimo_operator_metric_value{{{POOL}}}", "{{pool}} {{metric}}"),
            Query(f"mimo_pool:metric_target{{{POOL}}}", "{{pool}} {{metric}} target"),
        ),
        series(
            "Metric / target",
            "1 is on target; above 1 the metric asks for more replicas (outside the tolerance).",
            Query(
                f"mimo_operator_metric_value{{{POOL}}} / on (namespace, pool, metric) mimo_pool:metric_target{{{POOL}}}",
                "{{pool}} {{metric}}",
            ),
        ),
        series(
            "Scaling events",
            "Scaling decisions that changed replicas, by direction.",
            Query(
                f"sum by (pool, direction) (increase(mimo_operator_scaling_decisions_total{{{POOL}}}[{RATE}]))",
                "{{pool}} {{direction}}",
            ),
        ),
        series(
            "Prometheus query errors/s",
            "Queries that failed or returned nothing; the pool holds its replicas meanwhile.",
            Query(rate("mimo_operator_prometheus_query_errors_total", POOL, "pool"), "{{pool}}"),
        ),
        series(
            "Reconcile duration (p90)",
            "Time to reconcile a pool, by kopf handler.",
            *quantiles("mimo_operator_reconcile_duration_seconds", ops, by="handler", qs=(0.9,)),
            unit="s",
        ),
    ]


DASHBOARDS = {
    "overview": (
        "MiMo Serve / Overview",
        "Traffic, errors and latency at the router; the tokenizer service.",
        overview,
        False,
    ),
    "workers": (
        "MiMo Serve / Workers",
        "Queues, batches, KV cache, prefix cache and MTP per worker pool.",
        workers,
        True,
    ),
    "rollouts": (
        "MiMo Serve / Rollouts & rewards",
        "RL rollouts: samples, pass rates, rewards, the verifier.",
        rollouts,
        False,
    ),
    "autoscaler": (
        "MiMo Serve / Autoscaler",
        "The MiMoPool operator: replicas, metrics against targets, events.",
        autoscaler,
        True,
    ),
}


def build() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON."""
    return {
        f"{name}.json": dashboard(f"mimo-serve-{name}", title, description, panels(), with_pool)
        for name, (title, description, panels, with_pool) in DASHBOARDS.items()
    }


def render(body: dict[str, Any]) -> str:
    return json.dumps(body, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    for filename, body in build().items():
        (here / filename).write_text(render(body))
        print(f"wrote {here / filename}")
