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

from grafana import dashboard
from rl import autoscaler, rollouts
from serving import overview, workers

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
