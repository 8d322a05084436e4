"""Every dashboard query returns data from a real Prometheus that scraped a running stack under load.

The stack is real processes on loopback (tokenizer, two sim workers on the tiny-cpu profile, router,
verifier with its bubblewrap sandbox), started with services.stack. The operator runs in this process,
as the operator's own integration tests run it (kopf embedded, kmock standing in for the API server,
which cannot run here); it reads the workers' metrics from the same Prometheus, scales the chart's
own MiMoPool (rendered with helm-python-sdk), and its `mimo_operator_*` metrics are served from this
process. A second pool points at a dead Prometheus, so query errors are real too. Prometheus loads the
chart's rendered PrometheusRule, whose recording rules some panels read.

Queries run as Grafana would send them, with `$namespace` = default, `$pool` = (llm|broken),
`$__rate_interval` = 30s and `$__range` = 5m; each must return at least one finite value.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
import yaml
from prometheus_client import start_http_server

from operators.autoscaler.autoscale import OperatorConfig
from operators.autoscaler.main import RunOptions, serve
from services.common.net import free_port
from services.stack import Stack, random_ports_plan
from tests.support.autoscaler import VersionedEmulator, declare_resources
from tests.support.chart import CHART, deep_merge, one, render, scenario_values
from tests.support.live_stack import (
    NAMESPACE,
    POOL,
    PROMETHEUS,
    OperatorMetricsOnly,
    Prometheus,
    Target,
    drive_inference,
    drive_rollouts,
    drive_tokenizer,
    drive_verifier,
    prometheus_config,
)

pytestmark = [pytest.mark.e2e, pytest.mark.kmock(cls=VersionedEmulator)]

LOAD_S = 10.0  # every kind of call keeps coming for this long, so rate() sees it grow
PROFILE = Path(__file__).resolve().parents[2] / "services/worker/engines/sim/profiles/tiny-cpu.json"
POOLS = "serve.mimo.dev/v1alpha1/mimopools"
# Two pools selected, as Grafana writes a multi-value variable into a regex.
SUBSTITUTIONS = {"$__rate_interval": "30s", "$__range": "5m", "$namespace": NAMESPACE, "$pool": f"({POOL}|broken)"}
# The chart's CPU demo, as pool "llm" with targets low enough that the test's load scales it up.
CHART_VALUES = deep_merge(
    scenario_values("cpu-demo"),
    {
        "workers": {
            "poolName": POOL,
            "maxReplicas": 4,
            "autoscaling": {
                "metrics": [
                    {"type": "WaitingRequests", "target": 1},
                    {"type": "KVCacheUsage", "target": 0.0005},  # any running request
                    {"type": "TimeToFirstTokenP90", "target": 0.05, "window": "30s"},
                ]
            },
        },
        "monitoring": {"prometheusRule": {"enabled": True}},
    },
)


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL with the variables substituted) for every target."""
    found = []
    for path in sorted((CHART / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in SUBSTITUTIONS.items():
                    expr = expr.replace(variable, value)
                found.append((path.stem, panel["title"], expr))
    return found


def variable_queries() -> list[tuple[str, str, str]]:
    """(dashboard, series selector, label) of every `label_values(selector, label)` variable."""
    found = []
    for path in sorted((CHART / "dashboards").glob("*.json")):
        for variable in json.loads(path.read_text())["templating"]["list"]:
            if variable["type"] == "query":
                inner = variable["definition"].removeprefix("label_values(").removesuffix(")")
                selector, label = inner.rsplit(",", 1)
                found.append((path.stem, selector.replace("$namespace", NAMESPACE), label.strip()))
    return found


@contextlib.asynccontextmanager
async def running_operator(kube: kmock.KubernetesEmulator, prometheus_url: str) -> AsyncIterator[None]:
    """main.serve() as in production, standalone and logged in to kmock."""
    server = str(kube.url).rstrip("/")
    stop, ready = asyncio.Event(), asyncio.Event()
    config = OperatorConfig(prometheus_url=prometheus_url, interval_s=1.0, query_timeout_s=1.0)
    task = asyncio.create_task(
        serve(
            config,
            RunOptions(is_standalone=True),
            login=lambda **_: kopf.ConnectionInfo(server=server),
            stop_flag=stop,
            ready_flag=ready,
        )
    )
    await asyncio.wait_for(ready.wait(), timeout=15)
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)


def missing_data(prom: Prometheus) -> list[str]:
    """Every query (panels and variables) that fails or returns nothing, as readable lines."""
    missing = []
    for board, title, expr in dashboard_queries():
        answer = prom.query(expr)
        if answer.get("status") != "success":
            missing.append(f"{board} / {title}: {answer.get('error')}: {expr}")
        elif not any(math.isfinite(float(r["value"][1])) for r in answer["data"]["result"]):
            got = [r["value"][1] for r in answer["data"]["result"]][:4]
            missing.append(f"{board} / {title}: no data ({got}): {expr}")
    for board, selector, label in variable_queries():
        series = prom.api("series", **{"match[]": selector})
        values = {s.get(label) for s in series.get("data", [])} - {None}
        if NAMESPACE not in values and POOL not in values:
            missing.append(f"{board} / variable {label}: {sorted(values)} from {selector}")
    return missing


async def test_every_dashboard_query_returns_data(model_dir: Path, kmock: Any, tmp_path: Path) -> None:
    for binary in (PROMETHEUS, "/usr/bin/bwrap"):
        if shutil.which(binary) is None:
            pytest.fail(f"{binary} is missing (apt-get install -y prometheus bubblewrap)", pytrace=False)
    manifests = render(CHART_VALUES, namespace=NAMESPACE)
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(one(manifests, "PrometheusRule")["spec"]))
    pool = deep_merge(one(manifests, "MiMoPool"), {"metadata": {"uid": "uid-llm", "resourceVersion": "1"}})
    broken = deep_merge(pool, {"metadata": {"name": "broken", "uid": "uid-broken"}})
    broken["spec"]["prometheusUrl"] = f"http://127.0.0.1:{free_port()}"  # nobody listens there

    plan = random_ports_plan(
        model_dir,
        engine="sim",
        num_workers=2,
        worker_args=("--profile", str(PROFILE), "--time-scale", "0.5"),
        router_args=("--health-interval-s", "0.5", "--max-in-flight", "12", "--max-queue", "8"),
        verifier_args=("--processes", "1", "--sandboxes", "2"),
    )
    specs = plan.specs()
    operator_server, _ = start_http_server(free_port(), addr="127.0.0.1", registry=OperatorMetricsOnly())
    ns = {"namespace": NAMESPACE}
    targets = [Target(f"mimo-{s.name}", f"127.0.0.1:{s.metrics_port}", ns) for s in specs if "worker" not in s.name]
    targets += [
        Target("mimo-worker", f"127.0.0.1:{s.metrics_port}", {**ns, "pool": POOL}) for s in specs if "worker" in s.name
    ]
    targets.append(Target("mimo-operator", f"127.0.0.1:{operator_server.server_port}", {}, honor_labels=True))
    stack = Stack(specs, tmp_path / "logs")
    started = time.monotonic()
    try:
        with Prometheus(tmp_path, free_port(), prometheus_config(targets, rules)) as prom:
            await stack.start()
            declare_resources(kmock)
            kmock.objects[POOLS, NAMESPACE, POOL] = pool
            kmock.objects[POOLS, NAMESPACE, "broken"] = broken
            async with running_operator(kmock, prom.url):
                router, verifier, tokenizer = (stack.child(n).spec.target for n in ("router", "verifier", "tokenizer"))
                await asyncio.gather(
                    drive_inference(router, LOAD_S),
                    drive_rollouts(router, LOAD_S),
                    drive_verifier(verifier, LOAD_S),
                    drive_tokenizer(tokenizer, LOAD_S),
                )
                deadline = time.monotonic() + 25
                while (missing := await asyncio.to_thread(missing_data, prom)) and time.monotonic() < deadline:
                    await asyncio.sleep(1.0)
            down = [url for url, up in prom.targets_up().items() if not up]
    finally:
        await stack.stop()
        operator_server.shutdown()
    assert not down, f"targets down: {down}"
    assert not missing, "queries without data:\n" + "\n".join(missing)
    assert time.monotonic() - started < 90
