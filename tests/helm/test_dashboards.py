"""The dashboards: generated from dashboards/build.py, well formed, and built only on series the code exports.
(test_dashboards_live.py runs every query against a Prometheus scraping a running stack.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.chart import CHART, dashboards_build
from tests.support.metric_names import exported_names, metric_names, recorded_names

DASHBOARDS = CHART / "dashboards"
NAMES = ("overview", "workers", "rollouts", "autoscaler")


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((DASHBOARDS / f"{name}.json").read_text()))


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


def test_the_json_files_are_what_build_py_writes() -> None:
    build = dashboards_build()
    built = build.build()
    assert sorted(built) == sorted(f"{n}.json" for n in NAMES)
    for filename, body in built.items():
        assert (DASHBOARDS / filename).read_text() == build.render(body), (
            f"{filename} is stale: run .venv/bin/python helm/mimo-serve/dashboards/build.py"
        )


@pytest.mark.parametrize("name", NAMES)
def test_a_dashboard_is_well_formed(name: str) -> None:
    board = load(name)
    assert board["uid"] == f"mimo-serve-{name}" and board["title"].startswith("MiMo Serve / ")
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert "namespace" in variables
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["description"], f"{panel['title']} has no description"
        assert panel["targets"], panel["title"]
    for panel, target in targets(board):
        assert target["datasource"]["uid"] == "${datasource}"
        assert 'namespace=~"$namespace"' in target["expr"] or "mimo-operator" in target["expr"], panel["title"]
        if "pool" in variables and "mimo_worker_" in target["expr"]:
            assert 'pool=~"$pool"' in target["expr"], panel["title"]


def test_the_four_dashboards_cover_what_issue_11_asks_for() -> None:
    titles = {name: " | ".join(p["title"] for p in load(name)["panels"]).lower() for name in NAMES}
    for name, wanted in {
        "overview": ["requests/s", "errors", "time to first token", "inter-token", "end-to-end", "tokens/s"],
        "workers": ["waiting requests (queue)", "running", "kv cache usage", "prefix", "mtp acceptance"],
        "rollouts": ["samples/s", "pass rate", "reward distribution", "verifier latency", "sandbox outcomes"],
        "autoscaler": ["desired vs current replicas", "against their targets", "scaling events"],
    }.items():
        for words in wanted:
            assert words in titles[name], f"{name}: no panel about {words!r}"


@pytest.mark.parametrize("name", NAMES)
def test_queries_use_only_series_the_code_exports(name: str) -> None:
    known = exported_names() | recorded_names()
    for panel, target in targets(load(name)):
        unknown = metric_names(target["expr"]) - known
        assert not unknown, f"{name} / {panel['title']}: {unknown} is exported by no code"
