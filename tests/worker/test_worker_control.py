"""mimo.v1.WorkerControl on a real worker port (sim engine, gRPC over loopback): pause, continue, updates."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from mimo_client.v1 import worker_control_pb2 as wc
from mimo_client.v1 import worker_control_pb2_grpc as wc_grpc
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.common.config import ServerSettings
from services.common.server import start
from services.worker.engines.sim.engine import SimEngine
from services.worker.engines.sim.profile import SimProfile
from services.worker.engines.sim.synthetic_model import write_synthetic_model
from services.worker.server import build_service


@dataclass
class Worker:
    sched: pb_grpc.SglangSchedulerStub
    control: wc_grpc.WorkerControlStub
    model_dir: Path


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[Worker]:
    model_dir = write_synthetic_model(tmp_path / "model", max_context_length=4096)
    profile = SimProfile(decode_base_s=0.01, weight_load_s=0.05, is_mtp_enabled=False)
    settings = ServerSettings(service="worker", listen="127.0.0.1:0", metrics_port=None, grace_s=0.5)
    running = await start(settings, build_service(SimEngine(profile, model_dir, weight_version="v0")))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield Worker(pb_grpc.SglangSchedulerStub(channel), wc_grpc.WorkerControlStub(channel), model_dir)
    await running.drain()


def generate(rid: str, max_new: int) -> pb.GenerateRequest:
    params = pb.SamplingParams(temperature=0, top_p=1, top_k=-1, repetition_penalty=1, n=1, max_new_tokens=max_new,
                               ignore_eos=True)  # fmt: skip
    return pb.GenerateRequest(
        request_id=rid, tokenized=pb.TokenizedInput(input_ids=[5, 6, 7, 8]), sampling_params=params, stream=True
    )


async def run_to_end(call) -> tuple[str, pb.GenerateComplete]:
    messages = []
    while (message := await call.read()) is not grpc.aio.EOF:
        messages.append(message)
    version = dict(await call.initial_metadata()).get("mimo-weight-version", "")
    return version, messages[-1].complete


async def test_pause_abort_returns_partial_output_and_continue_resumes(worker: Worker) -> None:
    call = worker.sched.Generate(generate("long", 4000))
    first = await call.read()
    assert first.chunk.token_ids
    reply = await worker.control.PauseGeneration(wc.PauseGenerationRequest(mode=wc.PAUSE_MODE_ABORT), timeout=30)
    assert reply.num_aborted == 1 and reply.drained
    _, complete = await run_to_end(call)
    assert complete.finish_reason == "abort" and 0 < len(complete.output_ids) < 4000
    held = asyncio.ensure_future(run_to_end(worker.sched.Generate(generate("held", 5))))
    await asyncio.sleep(0.3)  # a paused worker holds new requests instead of failing them
    assert not held.done()
    assert (await worker.control.ContinueGeneration(wc.ContinueGenerationRequest(), timeout=10)).num_released == 1
    version, complete = await asyncio.wait_for(held, 30)
    assert complete.finish_reason == "length" and len(complete.output_ids) == 5 and version == "v0"


async def test_update_while_a_request_runs_waits_for_it_and_changes_the_version(worker: Worker) -> None:
    running = asyncio.ensure_future(run_to_end(worker.sched.Generate(generate("old", 40))))
    await asyncio.sleep(0.05)
    reply = await worker.control.UpdateWeights(
        wc.UpdateWeightsRequest(model_path=str(worker.model_dir), weight_version="v1"), timeout=60
    )
    assert reply.weight_version == "v1"
    version, complete = running.result()  # the update waited for the running request (pause, wait mode)
    assert version == "v0" and len(complete.output_ids) == 40
    version, _ = await run_to_end(worker.sched.Generate(generate("new", 3)))
    assert version == "v1"
    info = await worker.sched.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    server = await worker.sched.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    state = await worker.control.GetWeightVersion(wc.GetWeightVersionRequest(), timeout=10)
    assert info.weight_version == server.server_args["weight_version"] == state.weight_version == "v1"
    assert not state.is_paused and state.model_path == str(worker.model_dir)


async def test_a_checkpoint_of_another_model_is_refused_naming_model_path(worker: Worker, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"vocab_size": 7}))
    for path, message in ((other, "vocab_size 7"), (tmp_path / "absent", "cannot be read")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await worker.control.UpdateWeights(
                wc.UpdateWeightsRequest(model_path=str(path), weight_version="bad"), timeout=30
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "model_path" in (err.value.details() or "") and message in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await worker.control.UpdateWeights(wc.UpdateWeightsRequest(model_path=str(other)), timeout=30)
    assert "weight_version" in (err.value.details() or "")
    state = await worker.control.GetWeightVersion(wc.GetWeightVersionRequest(), timeout=10)
    assert state.weight_version == "v0" and not state.is_paused  # refused updates leave the worker serving


async def test_bad_control_requests_are_invalid_argument_naming_the_field(worker: Worker) -> None:
    path = str(worker.model_dir)
    bad = [
        (worker.control.PauseGeneration, wc.PauseGenerationRequest(mode=7), "mode"),
        (worker.control.PauseGeneration, wc.PauseGenerationRequest(timeout_s=float("nan")), "timeout_s"),
        (worker.control.PauseGeneration, wc.PauseGenerationRequest(timeout_s=-1), "timeout_s"),
        (worker.control.UpdateWeights, wc.UpdateWeightsRequest(model_path=path, weight_version="v1", timeout_s=1e9), "timeout_s"),
        (worker.control.UpdateWeights, wc.UpdateWeightsRequest(weight_version="v1"), "model_path"),
    ]  # fmt: skip
    for call, request, field in bad:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and (err.value.details() or "").startswith(field)
    state = await worker.control.GetWeightVersion(wc.GetWeightVersionRequest(), timeout=10)
    assert state.weight_version == "v0" and not state.is_paused
