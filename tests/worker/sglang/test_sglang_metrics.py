"""SGLang's own `sglang:*` metrics reach the worker's /metrics: read from the child's loopback sidecar at each scrape.

The child is the stand-in SGLang (`fake_sglang`), which serves its sidecar /metrics as SGLang's gRPC mode does
(OpenMetrics on `--port + 1`); every hop is real HTTP or gRPC over loopback.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.common.net import free_port
from services.worker.engines.sglang.child_metrics import ChildMetrics, sglang_families, sidecar_port
from tests.worker.sglang.test_sglang_supervision import FAKE_SGLANG, generate, wait_serving


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A sglang worker over the stand-in child, with its metrics endpoint on: (gRPC port, metrics port)."""
    model = tmp_path / "MiMo-7B-RL"
    model.mkdir()
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(FAKE_SGLANG), "FAKE_SGLANG_LOG": str(tmp_path / "sglang.log")}
    cmd = [sys.executable, "-m", "services.cli", "worker", "--engine", "sglang", "--model", str(model)]
    cmd += ["--listen", f"127.0.0.1:{port}", "--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1"]
    proc = subprocess.Popen(cmd, env=env, cwd=Path(__file__).parents[3])
    try:
        yield port, metrics_port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_sglang_metrics_are_served_beside_ours_on_the_worker_metrics_port(worker) -> None:
    port, metrics_port = worker
    await wait_serving(port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        msgs = [m async for m in pb_grpc.SglangSchedulerStub(channel).Generate(generate("r1", 2))]
    assert msgs[-1].HasField("complete")
    text = scrape(metrics_port)
    assert lines(text, 'sglang:prompt_tokens_total{model_name="fake"} 3.0'), lines(text, "sglang")
    assert lines(text, 'sglang:num_running_reqs{model_name="fake"}'), lines(text, "sglang")
    assert lines(text, "mimo_worker_sglang_metrics_up 1.0")
    assert lines(text, "mimo_worker_running_requests ")  # ours still there
    assert "# EOF" not in text  # re-served in our Prometheus text format, not pasted in


async def test_a_child_without_metrics_is_up_0_and_ours_still_scrape() -> None:
    """Nothing listens on the sidecar port, then it answers 500 and then something that is not an exposition."""
    dead = ChildMetrics(f"http://127.0.0.1:{free_port()}/metrics", timeout_s=1)
    (up,) = list(dead.collect())
    assert up.name == "mimo_worker_sglang_metrics_up" and up.samples[0].value == 0

    async def broken(request: web.Request) -> web.Response:
        status = 500 if request.query.get("n") == "1" else 200
        return web.Response(status=status, text="sglang:x{ 1\n", content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        for n in (1, 2):
            child = ChildMetrics(f"http://127.0.0.1:{port}/metrics?n={n}", timeout_s=2)
            families = list(await asyncio.to_thread(child.collect))
            assert [(f.name, f.samples[0].value) for f in families] == [("mimo_worker_sglang_metrics_up", 0)]
    finally:
        await runner.cleanup()


def test_only_sglang_families_are_kept_so_no_name_can_clash_with_ours() -> None:
    body = (
        "# TYPE sglang:token_usage gauge\nsglang:token_usage 0.25\n"
        "# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total 3.0\n# EOF\n"
    )
    families = sglang_families(body, "application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert [(f.name, f.samples[0].value) for f in families] == [("sglang:token_usage", 0.25)]


def test_samples_get_their_familys_sglang_name_back() -> None:
    """SGLang's sidecar writes OpenMetrics with prometheus_client, which escapes ':' in sample lines only."""
    body = (
        "# HELP sglang:prompt_tokens Number of prefill tokens processed.\n# TYPE sglang:prompt_tokens counter\n"
        'sglang_prompt_tokens_total{model_name="m"} 7.0\n# EOF\n'
    )
    (family,) = sglang_families(body, "application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert [(s.name, s.value) for s in family.samples] == [("sglang:prompt_tokens_total", 7.0)]


def test_sidecar_port_is_port_plus_one_unless_passed_through() -> None:
    assert sidecar_port(30000, ()) == 30001
    assert sidecar_port(30000, ("--grpc-http-sidecar-port", "9300")) == 9300
    assert sidecar_port(30000, ("--cuda-graph-max-bs", "8", "--metrics-http-port=9301")) == 9301
