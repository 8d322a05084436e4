"""The shared runtime over real gRPC: health, drain on SIGTERM, reflection, metrics, bad input."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from mimo_client.v1 import tokenizer_pb2, tokenizer_pb2_grpc

from services.common.net import free_port

SERVER = Path(__file__).resolve().parents[1] / "support" / "sleepy_server.py"


@pytest.fixture
def server():
    port, metrics_port = free_port(), free_port()
    cmd = [
        sys.executable,
        str(SERVER),
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics-port",
        str(metrics_port),
        "--metrics-host",
        "127.0.0.1",
        "--grace-s",
        "5",
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield proc, port, metrics_port
    if proc.poll() is None:
        proc.kill()
    proc.wait()


async def health_status(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)).status


async def test_serving_then_drains_on_sigterm_finishing_in_flight_call(server):
    proc, port, _ = server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        assert await health_status(channel, "mimo.v1.Tokenizer") == health_pb2.HealthCheckResponse.SERVING
        stub = tokenizer_pb2_grpc.TokenizerStub(channel)
        in_flight = asyncio.ensure_future(
            stub.CountTokens(tokenizer_pb2.CountTokensRequest(texts=["1500"]), timeout=10)
        )
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        # During the drain the health check reports NOT_SERVING (or the server is already refusing).
        await asyncio.sleep(0.2)
        try:
            status = await health_status(channel)
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        except grpc.aio.AioRpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE
        # A new call is refused while the old one is still running.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CountTokens(tokenizer_pb2.CountTokensRequest(texts=["1"]), timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        response = await in_flight
        assert response.total == 1500
    assert await asyncio.to_thread(proc.wait, 10) == 0


async def test_calls_racing_the_drain_on_an_open_channel_are_unavailable_never_cancelled(server):
    """A client with a long-lived channel (the router's to its peers) calling just as SIGTERM lands: each call is
    served or refused UNAVAILABLE (which clients retry elsewhere); grpc's own shutdown used to answer CANCELLED."""
    proc, port, _ = server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = tokenizer_pb2_grpc.TokenizerStub(channel)
        assert (await stub.CountTokens(tokenizer_pb2.CountTokensRequest(texts=["1"]), timeout=5)).total == 1
        proc.send_signal(signal.SIGTERM)
        codes = []
        while not codes or codes[-1] != grpc.StatusCode.UNAVAILABLE:
            try:
                await stub.CountTokens(tokenizer_pb2.CountTokensRequest(texts=["1"]), timeout=2)
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as e:
                codes.append(e.code())
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    assert await asyncio.to_thread(proc.wait, 10) == 0


async def test_reflection_lists_services(server):
    _, port, _ = server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def requests():
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        async for response in stub.ServerReflectionInfo(requests()):
            names = {s.name for s in response.list_services_response.service}
            break
    assert {"mimo.v1.Tokenizer", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


async def test_metrics_count_calls_by_method_and_code(server):
    _, port, metrics_port = server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = tokenizer_pb2_grpc.TokenizerStub(channel)
        for _ in range(3):
            await stub.CountTokens(tokenizer_pb2.CountTokensRequest(texts=["0"]), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.CountTokens(tokenizer_pb2.CountTokensRequest(), timeout=5)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "texts" in bad.value.details()
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    assert 'mimo_sleepy_requests_total{code="OK",method="CountTokens"} 3.0' in body
    assert 'mimo_sleepy_requests_total{code="INVALID_ARGUMENT",method="CountTokens"} 1.0' in body
    assert 'mimo_sleepy_request_duration_seconds_count{code="OK",method="CountTokens"} 3.0' in body


def test_port_in_use_is_a_clear_startup_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, str(SERVER), "--listen", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60
        )
    assert out.returncode == 2
    assert f"mimo-serve sleepy: --listen: cannot bind 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr


async def test_overall_health_is_not_serving_until_the_start_hooks_have_run():
    """grpc_health's servicer starts "" at SERVING; a router still fetching its tokenizer must not read as ready
    (CI once sent a rollout to a router whose tokenizer had not loaded: UNKNOWN "tokenizer not loaded")."""
    from services.common.config import ServerSettings
    from services.common.server import Service, start

    loaded = asyncio.Event()
    service = Service(register=lambda server: None, names=["test.Service"], on_start=[loaded.wait])
    port = free_port()
    settings = ServerSettings(service="test", listen=f"127.0.0.1:{port}", metrics_port=None, grace_s=0.1)
    starting = asyncio.create_task(start(settings, service))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await channel.channel_ready()  # bound and answering, its start hook still waiting
            assert await health_status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
            loaded.set()
            running = await starting
            assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
            await running.server.stop(0)
    finally:
        starting.cancel()
