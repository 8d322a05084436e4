"""SGLang's own `sglang:*` metrics reach Prometheus: the sglang worker re-serves them on its metrics port
(services/worker/engines/sglang/child_metrics.py), so the worker ServiceMonitor's endpoint must be that port of
the pod the operator makes and of the pod the chart renders without the operator."""

from __future__ import annotations

from typing import Any

import pytest

from operators.autoscaler import resources
from operators.autoscaler.spec import parse_pool
from tests.support.chart import deep_merge, one, render, scenario_values

MONITORING_ON = {"monitoring": {"serviceMonitors": {"enabled": True}}}


def worker_pods(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The worker pod spec from the operator (chart's MiMoPool) and from the chart alone (operator disabled)."""
    pool = deep_merge(one(render(values), "MiMoPool"), {"metadata": {"uid": "uid-1"}})
    made = resources.deployment(parse_pool(pool), replicas=1)["spec"]["template"]["spec"]
    plain = one(render(deep_merge(values, {"operator": {"enabled": False}})), "Deployment", "mimo-serve-workers")
    return {"operator": made, "chart": plain["spec"]["template"]["spec"]}


@pytest.mark.parametrize("scenario", ["default", "gpu-production"])
def test_the_worker_servicemonitor_scrapes_the_port_that_carries_sglang_metrics(scenario: str) -> None:
    values = deep_merge(scenario_values(scenario), MONITORING_ON)
    monitor = one(render(values), "ServiceMonitor", "mimo-serve-worker")["spec"]
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] == "metrics"
    for made_by, spec in worker_pods(values).items():
        (worker,) = spec["containers"]
        args = worker["args"]
        assert args[args.index("--engine") + 1] == "sglang", made_by  # --enable-metrics is on by default
        port = next(p for p in worker["ports"] if p["name"] == endpoint["port"])
        assert str(port["containerPort"]) == args[args.index("--metrics-port") + 1], made_by
