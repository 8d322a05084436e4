"""`--engine sglang` weight updates through SGLang's HTTP admin API, against the stand-in SGLang child.

SGLang itself cannot run here (no GPU); the stand-in (fake_sglang) speaks its scheduler gRPC protocol and
its documented `POST /update_weights_from_disk`, and logs every admin call it receives.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from mimo_client.v1 import worker_control_pb2 as wc
from mimo_client.v1 import worker_control_pb2_grpc as wc_grpc
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.common.net import free_port
from tests.worker.sglang.test_sglang_supervision import FAKE_SGLANG, wait_serving


def events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def worker(tmp_path: Path):
    model = tmp_path / "MiMo-7B-RL"
    model.mkdir()
    port, child_port, admin_port = free_port(), free_port(), free_port()
    profile = tmp_path / "sglang.json"
    profile.write_text(json.dumps({"admin_url": f"http://127.0.0.1:{admin_port}"}))
    log = tmp_path / "sglang.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(FAKE_SGLANG),
        "FAKE_SGLANG_LOG": str(log),
        "FAKE_ADMIN_PORT": str(admin_port),
    }
    cmd = [sys.executable, "-m", "services.cli", "worker", "--engine", "sglang", "--model", str(model)]
    cmd += ["--profile", str(profile), "--listen", f"127.0.0.1:{port}", "--sglang-port", str(child_port)]
    cmd += ["--metrics-port", "-1", "--grace-s", "2"]
    proc = subprocess.Popen(cmd, env=env, cwd=Path(__file__).parents[3])
    try:
        yield port, log, tmp_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for event in events(log):
            if event["event"] == "start":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(event["pid"], signal.SIGKILL)


async def test_update_goes_to_sglangs_admin_api_with_the_version(worker) -> None:
    port, log, tmp = worker
    await wait_serving(port)
    ckpt = tmp / "step-3"
    ckpt.mkdir()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        control, sched = wc_grpc.WorkerControlStub(channel), pb_grpc.SglangSchedulerStub(channel)
        reply = await control.UpdateWeights(wc.UpdateWeightsRequest(model_path=str(ckpt), weight_version="step-3"))
        assert reply.weight_version == "step-3"
        assert (await sched.GetModelInfo(pb.GetModelInfoRequest())).weight_version == "step-3"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await control.UpdateWeights(wc.UpdateWeightsRequest(model_path=str(tmp / "absent"), weight_version="x"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "model_path" in (err.value.details() or "") and "no such model path" in (err.value.details() or "")
        assert (await control.GetWeightVersion(wc.GetWeightVersionRequest())).weight_version == "step-3"
    calls = [e for e in events(log) if e["event"] == "update_weights_from_disk"]
    assert calls[0] == {
        "event": "update_weights_from_disk", "model_path": str(ckpt), "weight_version": "step-3", "flush_cache": True
    }  # fmt: skip
    assert len(calls) == 2
