"""What the rendered pods do: the operator turns the chart's MiMoPool into the same worker pod the chart
renders without it, workers suit a GPU model load, the router finds them, and everything runs
non-root with the least RBAC it needs."""

from __future__ import annotations

from typing import Any

import kubernetes_validate.utils as kv
import pytest

from operators.autoscaler import resources
from operators.autoscaler.spec import parse_pool
from tests.support.chart import KUBE_VERSIONS, Manifest, deep_merge, find, one, render, scenario_values

PRODUCTION = scenario_values("gpu-production")


def operator_deployment(values: dict[str, Any]) -> dict[str, Any]:
    """The Deployment the real operator code makes from the chart's MiMoPool."""
    pool = one(render(values), "MiMoPool")
    pool["metadata"]["uid"] = "uid-1"
    return resources.deployment(parse_pool(pool), replicas=pool["spec"]["minReplicas"])


def pod_specs(manifests: list[Manifest]) -> dict[str, dict[str, Any]]:
    found = {m.name: m.body["spec"]["template"]["spec"] for m in find(manifests, "Deployment")}
    for m in find(manifests, "MiMoPool"):
        found[m.name] = operator_deployment_from(m.body)["spec"]["template"]["spec"]
    return found


def operator_deployment_from(pool: dict[str, Any]) -> dict[str, Any]:
    pool = deep_merge(pool, {"metadata": {"uid": "uid-1"}})
    return resources.deployment(parse_pool(pool), replicas=1)


@pytest.mark.parametrize("values", [{}, PRODUCTION, scenario_values("cpu-demo")], ids=["default", "gpu", "cpu"])
def test_the_operator_makes_the_pod_the_chart_renders_without_it(values: dict[str, Any]) -> None:
    made = operator_deployment(values)
    plain = one(render(deep_merge(values, {"operator": {"enabled": False}})), "Deployment", "mimo-serve-workers")
    assert made["spec"]["template"]["metadata"]["labels"].pop("app.kubernetes.io/managed-by") == "mimo-autoscaler"
    assert made["spec"]["template"] == plain["spec"]["template"]
    assert made["spec"]["selector"] == plain["spec"]["selector"]
    for version in KUBE_VERSIONS:
        kv.validate(made, version, strict=True)  # the merged template is a valid Deployment


def test_production_workers_get_the_gpu_flags_and_the_operators_arguments() -> None:
    container = operator_deployment(PRODUCTION)["spec"]["template"]["spec"]["containers"][0]
    pool = parse_pool(deep_merge(one(render(PRODUCTION), "MiMoPool"), {"metadata": {"uid": "u"}}))
    extra = ["--sglang-python", "/usr/bin/python3", "--mem-fraction", "0.85", "--context-length", "32768"]
    assert container["args"] == [*resources.worker_args(pool), *extra]
    assert container["image"] == "ghcr.io/mimo-serve/mimo-serve-sglang:0.1.0"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_workers_suit_a_15_gb_model_load_on_a_gpu() -> None:
    spec = pod_specs(render())["mimo-serve-workers"]
    (worker,) = spec["containers"]
    startup = worker["startupProbe"]
    assert startup["grpc"] == {"port": 31000}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "less than 10 minutes to load the model"
    for probe in ("readinessProbe", "livenessProbe"):
        assert worker[probe]["grpc"] == {"port": 31000}
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["name"]: m for m in worker["volumeMounts"]}
    assert mounts["dshm"]["mountPath"] == "/dev/shm" and mounts["model-cache"]["readOnly"] is True
    (download,) = spec["initContainers"]  # the default cache is an emptyDir filled from the Hub
    assert "XiaomiMiMo/MiMo-7B-RL" in download["args"]
    grace = next(e for e in worker["env"] if e["name"] == "MIMO_WORKER_GRACE_S")
    assert float(grace["value"]) < spec["terminationGracePeriodSeconds"], "the drain must end before SIGKILL"


def test_the_cpu_demo_needs_no_gpu_and_no_download() -> None:
    manifests = render(scenario_values("cpu-demo"))
    spec = pod_specs(manifests)["mimo-serve-workers"]
    assert "nvidia.com/gpu" not in str(manifests) + str(spec)
    assert "initContainers" not in spec and not any("model-cache" in str(s) for s in pod_specs(manifests).values())
    assert "--engine" in spec["containers"][0]["args"] and "sim" in spec["containers"][0]["args"]


@pytest.mark.parametrize("operator", [True, False])
def test_the_router_discovers_the_worker_pods(operator: bool) -> None:
    manifests = render({"operator": {"enabled": operator}})
    router = one(manifests, "Deployment", "mimo-serve-router")["spec"]["template"]["spec"]
    args = dict(a.removeprefix("--").split("=", 1) for a in router["containers"][0]["args"][1:])
    assert args["discovery"] == "kubernetes" and args["namespace"] == "mimo"
    key, value = args["selector"].split("=")
    labels = (operator_deployment({}) if operator else one(manifests, "Deployment", "mimo-serve-workers"))["spec"][
        "template"
    ]["metadata"]["labels"]
    assert labels[key] == value
    role = one(manifests, "Role", "mimo-serve-router")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    assert router["automountServiceAccountToken"] is True


def test_only_the_router_and_operator_get_an_api_token() -> None:
    specs = pod_specs(render())
    with_token = {name for name, spec in specs.items() if spec.get("automountServiceAccountToken") is not False}
    assert with_token == {"mimo-serve-router", "mimo-serve-operator"}


@pytest.mark.parametrize("scenario", ["default", "gpu-production", "cpu-demo", "operator-disabled"])
def test_every_pod_is_non_root_and_only_the_verifier_leaves_seccomp(scenario: str) -> None:
    for name, spec in pod_specs(render(scenario_values(scenario))).items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, name
        expected_seccomp = "Unconfined" if name == "mimo-serve-verifier" else "RuntimeDefault"
        assert pod["seccompProfile"]["type"] == expected_seccomp, name
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], name
            assert not sc.get("privileged") and "add" not in sc["capabilities"], name
            if name != "mimo-serve-workers":  # SGLang writes its JIT caches next to its code
                assert sc["readOnlyRootFilesystem"] is True, name


OPERATOR_RULES = [
    {"apiGroups": ["serve.mimo.dev"], "resources": ["mimopools"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["serve.mimo.dev"], "resources": ["mimopools/status", "mimopools/scale"], "verbs": ["get", "patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "create", "patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "create", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
PEERING = {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"], "verbs": ["get", "list", "watch", "patch"]}


def test_the_operator_has_least_privilege_in_the_namespaces_it_watches() -> None:
    manifests = render({"operator": {"watchNamespaces": ["team-a"]}})
    roles = {(m.body["metadata"]["namespace"], m.name): m.body for m in find(manifests, "Role")}
    for ns in ("mimo", "team-a"):
        assert roles[(ns, "mimo-serve-operator")]["rules"] == [*OPERATOR_RULES, PEERING]
        assert one([m for m in find(manifests, "KopfPeering") if m.body["metadata"]["namespace"] == ns], "KopfPeering")
    cluster = {m.name: m.body for m in find(manifests, "ClusterRole")}
    assert set(cluster) == {"mimo-serve-operator-discovery"}
    assert all(set(r["verbs"]) <= {"get", "list", "watch"} for r in cluster["mimo-serve-operator-discovery"]["rules"])
    args = one(manifests, "Deployment", "mimo-serve-operator")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {"--namespace=mimo", "--namespace=team-a", "--peering=mimo-serve-operator"} <= set(args)
    everything = [r for m in manifests if m.kind in ("Role", "ClusterRole") for r in m.body["rules"]]
    assert not [r for r in everything if "*" in str(r) or "secrets" in r["resources"]]


def test_a_cluster_wide_operator_gets_a_cluster_role_and_peering() -> None:
    manifests = render({"operator": {"clusterWide": True}})
    role = one(manifests, "ClusterRole", "mimo-serve-operator")
    assert role["rules"] == [*OPERATOR_RULES, {**PEERING, "resources": ["clusterkopfpeerings"]}]
    assert one(manifests, "ClusterKopfPeering") and not find(manifests, "Role", "mimo-serve-operator")
    args = one(manifests, "Deployment", "mimo-serve-operator")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if a.startswith("--namespace")]


def test_an_unpeered_operator_runs_standalone_and_never_twice() -> None:
    deployment = one(render({"operator": {"peering": {"enabled": False}}}), "Deployment", "mimo-serve-operator")
    assert "--standalone" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_disruption_budgets_select_their_pods() -> None:
    manifests = render()
    pods = {m.name: m.body["spec"]["template"]["metadata"]["labels"] for m in find(manifests, "Deployment")}
    pods["mimo-serve-workers"] = operator_deployment({})["spec"]["template"]["metadata"]["labels"]
    budgets = {m.name: m.body["spec"] for m in find(manifests, "PodDisruptionBudget")}
    assert set(budgets) == {f"mimo-serve-{p}" for p in ("router", "tokenizer", "verifier", "workers")}
    for name, spec in budgets.items():
        assert spec["selector"]["matchLabels"].items() <= pods[name].items(), name
        assert spec["maxUnavailable"] == 1


def test_network_policies_let_only_the_router_reach_the_workers() -> None:
    manifests = render(PRODUCTION)
    policies = {m.name: m.body["spec"] for m in find(manifests, "NetworkPolicy")}
    router_labels = one(manifests, "Deployment", "mimo-serve-router")["spec"]["template"]["metadata"]["labels"]
    for name in ("mimo-serve-workers", "mimo-serve-tokenizer", "mimo-serve-verifier"):
        grpc_rule = policies[name]["ingress"][0]
        (peer,) = grpc_rule["from"]
        assert peer["podSelector"]["matchLabels"].items() <= router_labels.items(), name
    assert policies["mimo-serve-router"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "gateway"
    }


def test_the_verifier_pod_has_what_bubblewrap_needs_and_nothing_more() -> None:
    spec = pod_specs(render())["mimo-serve-verifier"]
    # The verifier's self-test wants its sandboxes to run as uid 65534: the pod runs as that user.
    assert spec["securityContext"]["runAsUser"] == 65534 and spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "Unconfined"}
    assert spec["hostUsers"] is False  # a pod user namespace, inside which bwrap nests its own
    (container,) = spec["containers"]
    sc = container["securityContext"]
    assert sc["procMount"] == "Unmasked" and sc["appArmorProfile"] == {"type": "Unconfined"}
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["allowPrivilegeEscalation"] is False
    assert "--processes=2" in container["args"] and "--sandboxes=4" in container["args"]
    plain = pod_specs(render({"verifier": {"sandbox": {"userNamespace": False}}}))["mimo-serve-verifier"]
    assert "hostUsers" not in plain and "procMount" not in plain["containers"][0]["securityContext"]
    assert "mimo-serve-verifier" not in pod_specs(render({"verifier": {"enabled": False}}))


@pytest.mark.parametrize("scenario", ["default", "cpu-demo"])
def test_each_part_runs_its_own_command_on_its_ports(scenario: str) -> None:
    specs = pod_specs(render(scenario_values(scenario)))
    for part in ("router", "tokenizer", "verifier", "operator", "workers"):
        (container,) = specs[f"mimo-serve-{part}"]["containers"]
        assert container["command"] == ["mimo-serve"] and container["args"][0] == part.removesuffix("s"), part
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        command_line = " ".join(container["args"]).replace("=", " ")
        assert f"--metrics-port {ports['metrics']}" in command_line, part
        if "grpc" in ports:
            assert container["readinessProbe"]["grpc"]["port"] == ports["grpc"], part
