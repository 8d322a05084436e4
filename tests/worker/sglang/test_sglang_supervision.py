"""`mimo-serve worker --engine sglang` with a stand-in SGLang child: readiness, proxying, SIGTERM drain."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.common.net import free_port
from services.worker.engines.sglang.profile import SglangProfile, build_command

FAKE_SGLANG = Path(__file__).parent / "fake_sglang"
SERVICE = "sglang.grpc.scheduler.SglangScheduler"


@dataclass
class Launched:
    proc: subprocess.Popen[bytes]
    port: int
    child_port: int
    log: Path
    model: Path

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []


@pytest.fixture
async def launched(tmp_path: Path) -> AsyncIterator[Launched]:
    model = tmp_path / "MiMo-7B-RL"
    model.mkdir()
    port, child_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(FAKE_SGLANG),
        "FAKE_SGLANG_LOG": str(tmp_path / "sglang.log"),
        "FAKE_STARTUP_S": "0.5",
        "FAKE_TOKEN_DELAY_S": "0.05",
    }
    cmd = [sys.executable, "-m", "services.cli", "worker", "--engine", "sglang", "--model", str(model)]
    cmd += ["--listen", f"127.0.0.1:{port}", "--sglang-port", str(child_port), "--metrics-port", "-1", "--grace-s", "5"]
    proc = subprocess.Popen(cmd, env=env, cwd=Path(__file__).parents[3])
    launched = Launched(proc, port, child_port, tmp_path / "sglang.log", model)
    try:
        yield launched
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for event in launched.events():  # never leave the stand-in behind
            if event["event"] == "start":
                with __import__("contextlib").suppress(ProcessLookupError):
                    os.kill(event["pid"], signal.SIGKILL)


async def wait_serving(port: int, timeout_s: float = 30.0) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            try:
                resp = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=1)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("worker never became SERVING")


def generate(rid: str, max_new: int) -> pb.GenerateRequest:
    params = pb.SamplingParams(temperature=0, top_p=1, top_k=-1, repetition_penalty=1, n=1, max_new_tokens=max_new)
    return pb.GenerateRequest(
        request_id=rid, tokenized=pb.TokenizedInput(input_ids=[1, 2, 3]), sampling_params=params, stream=True
    )


async def test_launches_the_exact_command_and_reports_ready_after_child_health(launched: Launched) -> None:
    await wait_serving(launched.port)
    start = next(e for e in launched.events() if e["event"] == "start")
    expected = build_command(SglangProfile(model_path=str(launched.model)), "127.0.0.1", launched.child_port)
    assert start["argv"] == expected[3:]  # argv after `python -m sglang.launch_server`
    async with grpc.aio.insecure_channel(f"127.0.0.1:{launched.port}") as channel:
        stub = pb_grpc.SglangSchedulerStub(channel)
        info = await stub.GetModelInfo(pb.GetModelInfoRequest())
        assert info.model_path == str(launched.model)
        msgs = [m async for m in stub.Generate(generate("r1", 4))]
        assert list(msgs[-1].complete.output_ids) == [100, 101, 102, 103]
        assert [t for m in msgs[:-1] for t in m.chunk.token_ids] == [100, 101, 102, 103]


async def test_sigterm_drains_running_requests_then_stops_sglang(launched: Launched) -> None:
    await wait_serving(launched.port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{launched.port}") as channel:
        stub = pb_grpc.SglangSchedulerStub(channel)
        call = stub.Generate(generate("in-flight", 30))  # 30 tokens x 50 ms: still running at SIGTERM
        first = await call.read()
        assert first.chunk.token_ids == [100]
        launched.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # no new requests once draining
            async with grpc.aio.insecure_channel(f"127.0.0.1:{launched.port}") as fresh:
                await pb_grpc.SglangSchedulerStub(fresh).GetLoads(pb.GetLoadsRequest(), timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not [e for e in launched.events() if e["event"] == "sigterm"]  # SGLang still up mid-drain
        rest = []
        while (msg := await call.read()) is not grpc.aio.EOF:
            rest.append(msg)
    assert rest[-1].complete.finish_reason == "length" and len(rest[-1].complete.output_ids) == 30
    assert launched.proc.wait(timeout=10) == 0
    sigterm = [e for e in launched.events() if e["event"] == "sigterm"]
    assert sigterm == [{"event": "sigterm", "running": 0}]  # stopped only after the running request finished
