"""The Rollouts & rewards and Autoscaler dashboards: RL rollouts, the verifier, the MiMoPool operator."""

from __future__ import annotations

from grafana import NS, POOL, RATE, Panel, Query, distribution, quantiles, rate, row, series, stat

# Verify calls that failed on the server's side (not the caller's).
SERVER_ERROR = 'code!~"OK|CANCELLED|INVALID_ARGUMENT|DEADLINE_EXCEEDED"'


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
        stat(
            "Verifier errors",
            "Share of Verify calls that ended in a server error (rewards become VERDICT_ERROR).",
            f"({rate(verify, NS + ', ' + SERVER_ERROR)} or vector(0)) / {rate(verify, NS)}",
            "percentunit",
        ),
        stat(
            "Sandbox failures/s",
            "Sandboxes that failed to start or whose runner stopped (0 when none).",
            f"{rate('mimo_verifier_sandbox_errors_total', NS)} or vector(0)",
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
            "Verdicts/s",
            "Scored tasks by kind (math, code) and verdict.",
            Query(rate("mimo_verifier_verdicts_total", NS, "kind, verdict"), "{{kind}} {{verdict}}"),
        ),
        series(
            "Sandbox outcomes: code tests/s",
            "Code tests run in the bubblewrap sandbox, by language and status (passed, wrong_answer, "
            "runtime_error, time_limit, memory_limit, sandbox_error, ...).",
            Query(rate("mimo_verifier_tests_total", NS, "language, status"), "{{language}} {{status}}"),
        ),
        series(
            "Verifier latency",
            "Time to score one task, queueing included, by kind.",
            *quantiles("mimo_verifier_task_duration_seconds", NS, by="kind"),
            unit="s",
        ),
        series(
            "Verifier queueing",
            "p90 wait for a math worker or a sandbox slot; tasks accepted and not yet scored.",
            *quantiles("mimo_verifier_queue_seconds", NS, by="kind", qs=(0.9,)),
            Query(f"sum(mimo_verifier_pending_tasks{{{NS}}})", "pending tasks"),
        ),
        series(
            "Math workers and sandboxes in use",
            "Busy against capacity for each pool (math processes, concurrent sandboxes).",
            Query(f"sum by (pool) (mimo_verifier_pool_busy{{{NS}}})", "{{pool}} busy"),
            Query(f"sum by (pool) (mimo_verifier_pool_capacity{{{NS}}})", "{{pool}} capacity"),
        ),
        series(
            "Verify calls/s by code",
            "Verifier RPCs by final gRPC status; sandbox isolation (1: bubblewrap, 0: --unsafe-no-sandbox).",
            Query(rate(verify, NS, "code"), "{{code}}"),
            Query(f"min(mimo_verifier_sandbox_enabled{{{NS}}})", "sandbox isolated"),
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
