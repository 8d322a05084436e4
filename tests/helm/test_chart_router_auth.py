"""The router's API keys in the chart: a keys Secret is mounted read-only and passed as --auth-keys-file."""

from __future__ import annotations

from tests.support.chart import one, render


def router_pod(values: dict) -> dict:
    return one(render(values), "Deployment", "mimo-serve-router")["spec"]["template"]["spec"]


def test_a_keys_secret_is_mounted_and_passed_to_the_router() -> None:
    pod = router_pod({"router": {"auth": {"keysSecret": "mimo-api-keys"}}})
    (router,) = [c for c in pod["containers"] if c["name"] == "router"]
    assert "--auth-keys-file=/etc/mimo/keys/keys.yaml" in router["args"]
    mount = next(m for m in router["volumeMounts"] if m["name"] == "api-keys")
    assert mount["mountPath"] == "/etc/mimo/keys" and mount["readOnly"]
    assert next(v for v in pod["volumes"] if v["name"] == "api-keys")["secret"]["secretName"] == "mimo-api-keys"


def test_without_keys_nothing_is_mounted() -> None:
    (router,) = [c for c in router_pod({})["containers"] if c["name"] == "router"]
    assert not any(a.startswith("--auth-keys-file") for a in router["args"])
