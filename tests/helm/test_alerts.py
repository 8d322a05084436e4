"""The alerts: promtool accepts the rules file and the rendered PrometheusRule, and every alert fires in a
promtool unit test (files/alerts_test.yaml) on the series the code exports."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.chart import CHART, one, render, scenario_values
from tests.support.metric_names import exported_names, metric_names, recorded_names

PROMTOOL = "/usr/bin/promtool"
RULES = CHART / "files" / "alerts.yaml"
UNIT_TESTS = CHART / "files" / "alerts_test.yaml"
# What issue #11 asks the alerts to catch, by alert name.
REQUIRED = {
    "MiMoWorkerDown",  # a worker down
    "MiMoTimeToFirstTokenOverSLO",  # time to first token over SLO
    "MiMoWorkerQueueGrowing",  # a growing queue
    "MiMoVerifierSandboxErrors",  # verifier sandbox errors
    "MiMoOperatorPrometheusUnreachable",  # the operator unable to read Prometheus
    "MiMoPoolAtMaxReplicas",  # replicas pinned at max
}


def promtool(*args: str) -> str:
    if shutil.which(PROMTOOL) is None:
        pytest.fail(f"{PROMTOOL} is missing: apt-get install -y prometheus (scripts/setup.sh does)", pytrace=False)
    done = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def rules_file() -> dict[str, Any]:
    return dict(yaml.safe_load(RULES.read_text()))


def alerts(rules: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}


def test_promtool_checks_the_rules_file() -> None:
    assert "SUCCESS" in promtool("check", "rules", str(RULES))


def test_every_alert_fires_in_a_promtool_unit_test() -> None:
    promtool("test", "rules", str(UNIT_TESTS))
    tested = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    firing = {case["alertname"] for t in tested for case in t["alert_rule_test"] if case["exp_alerts"]}
    assert firing == set(alerts(rules_file())), "every alert needs a unit test where it fires"
    assert set(alerts(rules_file())) >= REQUIRED


def test_alerts_use_only_series_the_code_exports() -> None:
    known = exported_names() | recorded_names()
    for name, rule in alerts(rules_file()).items():
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{name} uses {unknown}, which no code exports"
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


@pytest.mark.parametrize("scenario", ["default", "gpu-production"])
def test_the_rendered_prometheus_rule_carries_the_release_thresholds(scenario: str, tmp_path: Path) -> None:
    values = scenario_values(scenario) | {"monitoring": {"prometheusRule": {"enabled": True}}}
    spec = one(render(values), "PrometheusRule")["spec"]
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump(spec))
    assert "SUCCESS" in promtool("check", "rules", str(rendered))
    config = {(r["record"], r["labels"].get("metric", "")): r for r in spec["groups"][0]["rules"]}
    workers = {**render_defaults()["workers"], **values.get("workers", {})}
    slo = values.get("alerts", {}).get("ttftP90SloSeconds", 2)
    assert config[("mimo:ttft_p90_slo_seconds", "")]["expr"] == f"vector({slo})"
    assert config[("mimo:ttft_p90_slo_seconds", "")]["labels"] == {"namespace": "mimo"}
    assert config[("mimo_pool:max_replicas", "")]["expr"] == f"vector({workers['maxReplicas']})"
    assert config[("mimo_pool:max_replicas", "")]["labels"] == {"namespace": "mimo", "pool": "mimo-serve-workers"}
    for metric in workers["autoscaling"]["metrics"]:
        assert config[("mimo_pool:metric_target", metric["type"])]["expr"] == f"vector({metric['target']})"
    # The alerts themselves are the file's, with the release's extra labels.
    extra = values.get("alerts", {}).get("labels", {})
    ours = alerts({"groups": spec["groups"][1:]})
    for name, rule in alerts(rules_file()).items():
        assert ours[name] == {**rule, "labels": {**rule["labels"], **extra}}


def render_defaults() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART / "values.yaml").read_text()))


RUNBOOKS = CHART.parents[1] / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/mimo-serve/mimo-serve/blob/main/docs/runbooks.md"


def runbook_sections() -> dict[str, str]:
    """docs/runbooks.md's `## Name` sections by GitHub's anchor for them (the heading in lower case)."""
    parts = RUNBOOKS.read_text().split("\n## ")[1:]
    return {part.split("\n", 1)[0].strip().lower(): part for part in parts}


def test_every_alert_links_a_runbook_section_that_says_what_to_check_and_do() -> None:
    sections = runbook_sections()
    for name, rule in alerts(rules_file()).items():
        url = rule["annotations"].get("runbook_url", "")
        assert url == f"{RUNBOOK_BASE}#{name.lower()}", f"{name}: runbook_url is {url!r}"
        section = sections.get(name.lower())
        assert section is not None, f"docs/runbooks.md has no section for {name}"
        for part in ("**Means.**", "**Check.**", "**Do.**"):
            assert part in section, f"docs/runbooks.md, {name}: no {part}"
    assert set(sections) == {n.lower() for n in alerts(rules_file())}, "a runbook for an alert that is gone"


def test_the_chart_points_runbook_links_at_its_own_base() -> None:
    values = {
        "monitoring": {"prometheusRule": {"enabled": True}},
        "alerts": {"runbookBaseUrl": "https://wiki.example/mimo/"},
    }
    ours = alerts({"groups": one(render(values), "PrometheusRule")["spec"]["groups"][1:]})
    assert {r["annotations"]["runbook_url"] for r in ours.values()} == {
        f"https://wiki.example/mimo#{n.lower()}" for n in ours
    }
