"""The torch engine behind the real SglangScheduler servicer, over gRPC on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
import torch
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.common.config import ServerSettings
from services.common.server import start
from services.worker.engine_api import GenerateInput
from services.worker.engines.torch import TorchEngine, TorchEngineConfig
from services.worker.engines.torch.core import CoreConfig, EngineCore
from services.worker.model import load_mimo
from services.worker.server import build_service
from tests.support.torch_engine import greedy, run_all, tokens_of, write_model_dir

PROMPT = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model"))


@asynccontextmanager
async def serving(model_dir: Path, **kw) -> AsyncIterator[tuple[pb_grpc.SglangSchedulerStub, TorchEngine]]:
    engine = TorchEngine(TorchEngineConfig(model_dir=str(model_dir), **kw))
    settings = ServerSettings(service="worker", listen="127.0.0.1:0", metrics_port=None, grace_s=1.0)
    running = await start(settings, build_service(engine))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield pb_grpc.SglangSchedulerStub(channel), engine
    finally:
        await channel.close()
        await running.drain()


def request(rid: str, max_new: int, prompt: list[int] = PROMPT, **params) -> pb.GenerateRequest:
    sampling = pb.SamplingParams(temperature=0.0, max_new_tokens=max_new, ignore_eos=True, **params)
    return pb.GenerateRequest(
        request_id=rid, tokenized=pb.TokenizedInput(input_ids=prompt), sampling_params=sampling, stream=True
    )


async def complete_of(stub: pb_grpc.SglangSchedulerStub, req: pb.GenerateRequest) -> pb.GenerateComplete:
    msgs = [m async for m in stub.Generate(req)]
    return msgs[-1].complete


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_the_worker_streams_what_the_engine_computes_directly(model_dir: Path) -> None:
    model = load_mimo(model_dir, "cpu", torch.float32)
    direct = run_all(
        EngineCore(model, CoreConfig(num_blocks=256)), [GenerateInput("d", tuple(PROMPT), greedy(20, ignore_eos=True))]
    )
    async with serving(model_dir) as (stub, _):
        done = await complete_of(stub, request("w", 20))
        loads = await stub.GetLoads(pb.GetLoadsRequest(include=["spec"]))
    assert list(done.output_ids) == tokens_of(direct[("d", 0)])
    assert done.spec_draft_tokens > 0 and done.finish_reason == "length"
    spec = loads.loads[0].speculative
    assert spec.accept_length >= 1.0 and 0.0 <= spec.accept_rate <= 1.0


async def test_no_mtp_serves_the_same_greedy_tokens(model_dir: Path) -> None:
    async with serving(model_dir) as (stub, _):
        with_mtp = await complete_of(stub, request("a", 16))
    async with serving(model_dir, is_mtp_enabled=False) as (stub, engine):
        without = await complete_of(stub, request("b", 16))
        assert engine.load().spec_accept_rate is None
    assert list(with_mtp.output_ids) == list(without.output_ids) and without.spec_draft_tokens == 0


async def test_closing_a_stream_mid_way_frees_its_kv_blocks(model_dir: Path) -> None:
    async with serving(model_dir) as (stub, engine):
        call = stub.Generate(request("long", 3000))
        await call.read()
        await call.read()
        assert engine.load().used_kv_tokens > 0
        call.cancel()
        await eventually(lambda: engine.load().used_kv_tokens == 0 and engine.load().running_requests == 0)


async def test_a_small_kv_cache_queues_and_preempts_but_serves_everyone(model_dir: Path) -> None:
    async with serving(model_dir, kv_cache_tokens=128, block_size=8) as (stub, engine):
        prompts = [[20 + i, *PROMPT] for i in range(8)]  # 8 x (11 + 40) tokens through 128 slots
        done = await asyncio.gather(*(complete_of(stub, request(f"r{i}", 40, p)) for i, p in enumerate(prompts)))
        assert engine._core is not None and engine._core.scheduler.num_preemptions > 0
    assert all(d.finish_reason == "length" and len(d.output_ids) == 40 for d in done)


async def test_a_prompt_past_the_kv_capacity_is_invalid_argument(model_dir: Path) -> None:
    async with serving(model_dir, kv_cache_tokens=64, block_size=8) as (stub, _):
        info = await stub.GetModelInfo(pb.GetModelInfoRequest())
        assert info.max_context_length <= 64
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await complete_of(stub, request("big", 4, PROMPT * 7))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "input_ids" in (err.value.details() or "")


async def test_too_many_requests_in_flight_is_resource_exhausted(model_dir: Path) -> None:
    async with serving(model_dir, max_running_requests=1, max_waiting_requests=1) as (stub, engine):
        calls = [stub.Generate(request("running", 2000))]
        await calls[0].read()
        calls.append(stub.Generate(request("waiting", 2000)))
        await eventually(lambda: engine.load().waiting_requests == 1)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await complete_of(stub, request("third", 4))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for call in calls:
            call.cancel()


def test_worker_flags_reach_the_engine(model_dir: Path) -> None:
    from services.worker.__main__ import build_parser
    from services.worker.engines.torch import build as build_engine

    flags = ["--engine", "torch", "--model", str(model_dir), "--no-mtp", "--kv-cache-tokens", "256"]
    flags += ["--max-running-requests", "8", "--block-size", "8", "--max-batch-tokens", "512"]
    engine = build_engine(build_parser().parse_args(flags))
    cfg = engine.cfg
    assert (cfg.is_mtp_enabled, cfg.kv_cache_tokens, cfg.max_running_requests) == (False, 256, 8)
    assert (cfg.block_size, cfg.max_batch_tokens, cfg.device, cfg.torch_dtype) == (8, 512, "cpu", torch.float32)
    with pytest.raises(FileNotFoundError):
        build_engine(build_parser().parse_args(["--engine", "torch", "--model", str(model_dir / "nowhere")]))
