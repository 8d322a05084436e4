"""The sim worker over gRPC: admission limits, GetLoads speculative section, mimo_worker_* metrics, CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.common.config import ServerSettings
from services.common.server import start
from services.worker.engines.sim.engine import SimEngine
from services.worker.engines.sim.profile import SimProfile
from services.worker.server import build_service


def generate(rid: str, max_new: int) -> pb.GenerateRequest:
    params = pb.SamplingParams(
        temperature=0, top_p=1, top_k=-1, repetition_penalty=1, n=1, max_new_tokens=max_new, ignore_eos=True
    )
    return pb.GenerateRequest(
        request_id=rid, tokenized=pb.TokenizedInput(input_ids=[5, 6, 7, 8]), sampling_params=params, stream=True
    )


@pytest.fixture
async def small_worker(sim_model_dir: Path) -> AsyncIterator[pb_grpc.SglangSchedulerStub]:
    profile = SimProfile(decode_base_s=0.005, max_running_requests=1, max_waiting_requests=1)
    settings = ServerSettings(service="worker", listen="127.0.0.1:0", metrics_port=None, grace_s=0.5)
    running = await start(settings, build_service(SimEngine(profile, sim_model_dir)))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield pb_grpc.SglangSchedulerStub(channel)
    await running.drain()


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_full_waiting_queue_answers_resource_exhausted(small_worker: pb_grpc.SglangSchedulerStub) -> None:
    running = small_worker.Generate(generate("a", 3000))
    await running.read()  # admitted: the waiting queue is empty again
    waiting = small_worker.Generate(generate("b", 3000))
    for _ in range(100):  # the second call reaches the worker a moment later
        load = (await small_worker.GetLoads(pb.GetLoadsRequest())).loads[0]
        if load.num_waiting_reqs:
            break
        await asyncio.sleep(0.02)
    assert (load.num_running_reqs, load.num_waiting_reqs) == (1, 1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in small_worker.Generate(generate("c", 4)):
            pass
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry" in (err.value.details() or "")
    running.cancel()
    waiting.cancel()


async def test_loads_report_speculative_acceptance_and_metrics_follow(
    small_worker: pb_grpc.SglangSchedulerStub,
) -> None:
    generated, drafts = sample("mimo_worker_generated_tokens_total"), sample("mimo_worker_spec_draft_tokens_total")
    ttft_count = sample("mimo_worker_time_to_first_token_seconds_count")
    call = small_worker.Generate(generate("m", 40))
    await call.read()
    assert sample("mimo_worker_running_requests") == 1 and sample("mimo_worker_kv_usage_ratio") > 0
    msgs = []
    while (msg := await call.read()) is not grpc.aio.EOF:
        msgs.append(msg)
    done = msgs[-1].complete
    assert sample("mimo_worker_generated_tokens_total") - generated == 40
    assert sample("mimo_worker_spec_draft_tokens_total") - drafts == done.spec_draft_tokens > 0
    assert sample("mimo_worker_time_to_first_token_seconds_count") == ttft_count + 1
    assert sample("mimo_worker_running_requests") == 0
    loads = await small_worker.GetLoads(pb.GetLoadsRequest(include=["spec"]))
    assert loads.loads[0].HasField("speculative") and 1.0 < loads.loads[0].speculative.accept_length <= 2.0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await small_worker.GetLoads(pb.GetLoadsRequest(include=["nonsense"]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "include" in (err.value.details() or "")


def test_cli_needs_a_model_and_says_when_torch_is_missing() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "services.cli", "worker", "--engine", "sim"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "--model" in out.stderr
    has_torch_engine = (Path(__file__).parents[3] / "services" / "worker" / "engines" / "torch").is_dir()
    if not has_torch_engine:
        out = subprocess.run(
            [sys.executable, "-m", "services.cli", "worker", "--engine", "torch", "--model", "/nonexistent"],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 2 and "torch engine not built yet" in out.stderr


async def test_an_impossible_n_is_invalid_argument_not_an_invitation_to_retry(
    small_worker: pb_grpc.SglangSchedulerStub,
) -> None:
    request = generate("huge-n", 4)
    request.sampling_params.n = 10**6
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await small_worker.Generate(request).read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sampling_params.n" in (err.value.details() or "")
