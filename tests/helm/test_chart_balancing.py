"""The router balances over every verifier and tokenizer pod: headless Services and dns:/// targets."""

from __future__ import annotations

import pytest

from tests.support.chart import NAMESPACE, deep_merge, one, render

MONITORING_ON = {"monitoring": {"serviceMonitors": {"enabled": True}}}


@pytest.mark.parametrize("component", ["verifier", "tokenizer"])
def test_a_headless_service_beside_the_clusterip_one_and_the_router_targets_it(component: str) -> None:
    manifests = render(MONITORING_ON)
    name = f"mimo-serve-{component}"
    plain, headless = one(manifests, "Service", name), one(manifests, "Service", f"{name}-headless")
    assert headless["spec"]["clusterIP"] == "None" and "clusterIP" not in plain["spec"]
    assert headless["spec"]["selector"] == plain["spec"]["selector"]
    grpc = next(p for p in plain["spec"]["ports"] if p["name"] == "grpc")
    assert headless["spec"]["ports"] == [grpc]  # no metrics port: the ServiceMonitor scrapes each pod once
    monitor = one(manifests, "ServiceMonitor", name)["spec"]
    assert {e["port"] for e in monitor["endpoints"]} == {"metrics"}
    args = one(manifests, "Deployment", "mimo-serve-router")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--{component}=dns:///{name}-headless.{NAMESPACE}.svc:{grpc['port']}" in args


def test_the_service_port_value_reaches_both_services_and_the_router() -> None:
    manifests = render(deep_merge(MONITORING_ON, {"verifier": {"service": {"port": 41000}}}))
    headless = one(manifests, "Service", "mimo-serve-verifier-headless")
    assert headless["spec"]["ports"][0]["port"] == 41000
    args = one(manifests, "Deployment", "mimo-serve-router")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--verifier=dns:///mimo-serve-verifier-headless.{NAMESPACE}.svc:41000" in args
