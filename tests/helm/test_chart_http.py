"""The chart exposes the router's OpenAI HTTP API: Service port, container port and flag, and the NetworkPolicy
lets clients reach it; `router.http.enabled: false` takes all of it away."""

from __future__ import annotations

from typing import Any

from tests.support.chart import find, render

NETPOL_ON = {"networkPolicy": {"enabled": True}}


def router_parts(values: dict[str, Any]) -> tuple[dict, dict, dict]:
    manifests = render(values)
    service = next(
        m.body
        for m in find(manifests, "Service")
        if m.body["spec"]["selector"].get("app.kubernetes.io/component") == "router"
    )
    deployment = next(m.body for m in find(manifests, "Deployment") if m.name.endswith("router"))
    policy = next(m.body for m in find(manifests, "NetworkPolicy") if m.name.endswith("router"))
    return service, deployment["spec"]["template"]["spec"]["containers"][0], policy


def test_http_is_on_by_default():
    service, container, policy = router_parts(NETPOL_ON)
    assert {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"} in service[
        "spec"
    ]["ports"]
    assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in container["ports"]
    assert "--http-listen=0.0.0.0:8000" in container["args"]
    assert container["readinessProbe"]["grpc"]["port"] == 50051  # /health answers the same: a routable worker
    assert container["livenessProbe"]["grpc"]["service"] == "liveness"
    allowed = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert 8000 in allowed and 50051 in allowed


def test_http_off_removes_the_port():
    service, container, policy = router_parts({**NETPOL_ON, "router": {"http": {"enabled": False, "port": 8080}}})
    assert all(p["name"] != "http" for p in service["spec"]["ports"])
    assert all(p["name"] != "http" for p in container["ports"])
    assert "--no-http" in container["args"]
    allowed = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert 8080 not in allowed


def test_the_http_port_follows_the_value():
    service, container, policy = router_parts({**NETPOL_ON, "router": {"http": {"port": 8080}}})
    assert any(p["port"] == 8080 for p in service["spec"]["ports"])
    assert "--http-listen=0.0.0.0:8080" in container["args"]
    assert 8080 in [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
