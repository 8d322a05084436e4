"""The images, built and run: `scripts/images.sh` builds both (podman here, from a local Debian base where
nothing can be pulled), then the stack runs from the main image as containers on the host's loopback with
the chart's security settings, answers a chat and a rollout with rewards through the SDK, and every
container drains on SIGTERM with exit 0.

Real parts only: the images, podman (runc), bubblewrap inside the verifier container, the tiny model baked
into the image. What is not the chart: no Kubernetes (so no probes or Services: the router gets the
workers with --workers, and everything listens on 127.0.0.1 with host networking instead of pod IPs), and
the SGLang image is built against a stand-in base (docker/standin/sglang.Dockerfile), not SGLang.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mimo_client import MimoClient
from mimo_client.errors import MimoError
from mimo_client.types import MathTask, RolloutPrompt, SampleFinished, VerifyTask

from services.common.net import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
VERSION = "0.1.0"
MAIN = os.environ.get("IMAGE_REPO", "ghcr.io/mimo-serve/mimo-serve") + f":{VERSION}"
MODEL = "/opt/mimo-serve/models/tiny-mimo"  # the chart's cpu-demo model.path
# The chart's global securityContext / podSecurityContext: non-root 10001, read-only root, no capabilities,
# no privilege escalation, an emptyDir at /tmp. podman's default seccomp profile stands for RuntimeDefault.
CHART = ("--read-only", "--read-only-tmpfs=false", "--tmpfs=/tmp:rw,mode=1777,size=1g", "--cap-drop=all",
         "--security-opt=no-new-privileges", "--network=host")  # fmt: skip
# The verifier's additions (verifier.sandbox): uid 65534, seccomp unconfined, an unmasked /proc, and a
# user namespace of its own (hostUsers: false).
VERIFIER = ("--user=65534:65534", "--security-opt=seccomp=unconfined", "--security-opt=unmask=ALL",
            "--uidmap=0:200000:65536", "--gidmap=0:200000:65536")  # fmt: skip


def _podman_env() -> dict[str, str]:
    conf = subprocess.run([str(REPO / "scripts/images.sh"), "conf"], capture_output=True, text=True, check=True)
    env = dict(os.environ)
    if conf.stdout.strip():
        env["CONTAINERS_CONF"] = conf.stdout.strip()
    return env


@pytest.fixture(scope="module")
def podman() -> Iterator[dict[str, str]]:
    if os.environ.get("MIMO_TEST_IMAGES") != "1":
        pytest.skip(
            "image build and run: on in `make test` (which sets MIMO_TEST_IMAGES=1; MIMO_TEST_IMAGES=0 make test "
            "leaves it out), off in a plain pytest run: a cold build of both images takes ~2.5 min on a 2-core machine"
        )
    if shutil.which("podman") is None and not (os.geteuid() == 0 and shutil.which("apt-get")):
        pytest.skip("no container runtime: podman is not installed and cannot be (needs root and apt-get)")
    start = time.monotonic()
    build = subprocess.run([str(REPO / "scripts/images.sh")], capture_output=True, text=True, timeout=1500)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-5000:]
    print(f"images built in {time.monotonic() - start:.0f} s")
    yield _podman_env()


def run(env: dict[str, str], *argv: str, check: bool = True, timeout: float = 120) -> str:
    done = subprocess.run(["podman", *argv], capture_output=True, text=True, env=env, timeout=timeout)
    assert not check or done.returncode == 0, f"podman {' '.join(argv)}: {done.stderr[-2000:]}"
    return done.stdout.strip()


class Containers:
    """Started containers, stopped with SIGTERM (podman stop) and removed at the end."""

    def __init__(self, env: dict[str, str], prefix: str) -> None:
        self.env, self.prefix, self.names = env, prefix, []

    def start(self, name: str, *options: str, args: list[str]) -> str:
        full = f"{self.prefix}-{name}"
        run(self.env, "rm", "-f", full, check=False)
        run(self.env, "run", "-d", f"--name={full}", *CHART, *options, MAIN, *args)
        self.names.append(full)
        return full

    def logs(self, name: str) -> str:
        return run(self.env, "logs", name, check=False)

    def drain(self, name: str) -> int:
        run(self.env, "stop", "--time=60", name, timeout=90)
        return int(run(self.env, "inspect", "--format={{.State.ExitCode}}", name))

    def remove_all(self) -> None:
        for name in self.names:
            run(self.env, "rm", "-f", name, check=False)


def wait_serving(containers: Containers, name: str, port: int, timeout_s: float = 300) -> None:
    """Until the container's gRPC health service says SERVING (what the chart's grpc probes ask)."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            state = run(containers.env, "inspect", "--format={{.State.Status}}", name)
            assert state == "running", f"{name} is {state}:\n{containers.logs(name)[-3000:]}"
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    raise AssertionError(f"{name} not SERVING after {timeout_s} s:\n{containers.logs(name)[-3000:]}")


def chat_when_routable(client: MimoClient, timeout_s: float = 300) -> str:
    """The router's first chat, retried while it has not yet seen a worker healthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.chat([{"role": "user", "content": "What is 2 + 3?"}], max_new_tokens=16, timeout_s=120).text
        except MimoError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_the_image_runs_the_stack_with_the_charts_security_settings(podman: dict[str, str]) -> None:
    env = podman
    absent = subprocess.run(["podman", "run", "--rm", "--entrypoint=/opt/venv/bin/python", MAIN, "-c", "import bench"],
                            capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert absent.returncode != 0 and "No module named 'bench'" in absent.stderr, "the image must not ship bench/"
    # The commands the chart runs that the stack below does not: the model download init container
    # (`python -c "from huggingface_hub import snapshot_download ..."`) and the operator.
    run(env, "run", "--rm", *CHART, "--user=10001:10001", "--entrypoint=python", MAIN, "-c",
        "from huggingface_hub import snapshot_download")  # fmt: skip
    assert "usage" in run(env, "run", "--rm", *CHART, "--user=10001:10001", MAIN, "operator", "--help").lower()

    ports = {name: free_port() for name in ("tokenizer", "verifier", "sim", "torch", "router")}
    metrics = {name: free_port() for name in ports}

    def serve(name: str) -> list[str]:
        return [f"--listen=127.0.0.1:{ports[name]}", f"--metrics-port={metrics[name]}"]

    containers = Containers(env, f"mimo-test-{os.getpid()}")
    try:
        started = time.monotonic()
        user = "--user=10001:10001"
        names = {
            "tokenizer": containers.start("tokenizer", user, args=["tokenizer", f"--model={MODEL}", *serve("tokenizer")]),
            "verifier": containers.start("verifier", *VERIFIER, args=["verifier", "--processes=1", "--sandboxes=2", *serve("verifier")]),
            "sim": containers.start("sim", user, args=["worker", "--engine=sim", f"--model={MODEL}", *serve("sim")]),
            "torch": containers.start("torch", user, args=["worker", "--engine=torch", f"--model={MODEL}", "--device=cpu", *serve("torch")]),
        }  # fmt: skip
        for name in names:
            wait_serving(containers, names[name], ports[name])
        workers = f"grpc://127.0.0.1:{ports['sim']},grpc://127.0.0.1:{ports['torch']}"
        names["router"] = containers.start("router", user, args=[
            "router", *serve("router"), f"--workers={workers}", f"--tokenizer=127.0.0.1:{ports['tokenizer']}",
            f"--verifier=127.0.0.1:{ports['verifier']}", "--model-name=tiny-mimo", "--policy=round_robin"])  # fmt: skip
        wait_serving(containers, names["router"], ports["router"])
        print(f"stack serving {time.monotonic() - started:.0f} s after the first container started")

        target = f"127.0.0.1:{ports['router']}"
        with MimoClient(target, verifier_target=f"127.0.0.1:{ports['verifier']}", timeout_s=120) as client:
            assert chat_when_routable(client)
            prompts = [RolloutPrompt(f"q{i}", messages=[{"role": "user", "content": f"What is {i} + {i}?"}],
                                     reward=MathTask([str(2 * i)])) for i in range(1, 4)]  # fmt: skip
            events = list(client.rollout(prompts, samples_per_prompt=2, max_new_tokens=32, timeout_s=600))
            samples = [e for e in events if isinstance(e, SampleFinished)]
            assert len(samples) == 6
            assert all(s.verification is not None and s.verification.verdict != "error" for s in samples), samples
            # the same responses verified directly get the same rewards: the rollout's rewards are the verifier's
            direct = client.verify([VerifyTask(response=s.text, check=MathTask([str(2 * (s.prompt_index + 1))]))
                                    for s in samples])  # fmt: skip
            assert [r.reward for r in direct] == [s.reward for s in samples]

        for name in ("router", "sim", "torch", "verifier", "tokenizer"):
            code = containers.drain(names[name])
            assert code == 0, f"{name} exited {code} on SIGTERM:\n{containers.logs(names[name])[-3000:]}"
    finally:
        containers.remove_all()
