"""SGLang scheduler protocol conformance, over real gRPC, for every engine in ENGINE_FACTORIES."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import zipfile
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from smg_grpc_proto.generated import common_pb2
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb

if TYPE_CHECKING:
    from tests.worker.conformance.conftest import Worker

PROMPT = list(range(10, 42))  # 32 ids, valid in any vocabulary we serve


def request(
    rid: str, *, max_new: int | None = 8, stream: bool = True, temperature: float = 0.0, n: int = 1, **sampling
) -> pb.GenerateRequest:
    params = pb.SamplingParams(temperature=temperature, top_p=1.0, top_k=-1, repetition_penalty=1.0, n=n, **sampling)
    if max_new is not None:
        params.max_new_tokens = max_new
    return pb.GenerateRequest(
        request_id=rid, tokenized=pb.TokenizedInput(input_ids=PROMPT), sampling_params=params, stream=stream
    )


async def collect(worker: Worker, req: pb.GenerateRequest) -> list[pb.GenerateResponse]:
    return [m async for m in worker.stub.Generate(req)]


def completes(msgs: list[pb.GenerateResponse]) -> list[pb.GenerateComplete]:
    return [m.complete for m in msgs if m.WhichOneof("response") == "complete"]


async def long_max_new(worker: Worker) -> int:
    """A request long enough to outlast the test's waits unless it is aborted."""
    info = await worker.stub.GetModelInfo(pb.GetModelInfoRequest())
    return min(4000, info.max_context_length - len(PROMPT) - 1)


async def wait_idle(worker: Worker, timeout_s: float = 3.0) -> pb.SchedulerLoad:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        load = (await worker.stub.GetLoads(pb.GetLoadsRequest())).loads[0]
        if load.num_running_reqs == 0 and load.num_waiting_reqs == 0:
            return load
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"worker still busy: {load}")
        await asyncio.sleep(0.02)


async def test_health_check_and_grpc_health(worker: Worker) -> None:
    resp = await worker.stub.HealthCheck(pb.HealthCheckRequest())
    assert resp.healthy, resp.message
    health = health_pb2_grpc.HealthStub(worker.channel)
    status = await health.Check(health_pb2.HealthCheckRequest(service="sglang.grpc.scheduler.SglangScheduler"))
    assert status.status == health_pb2.HealthCheckResponse.SERVING


async def test_model_info_has_absolute_paths(worker: Worker) -> None:
    info = await worker.stub.GetModelInfo(pb.GetModelInfoRequest())
    assert os.path.isabs(info.model_path) and os.path.isdir(info.model_path)
    assert os.path.isabs(info.tokenizer_path) and os.path.isdir(info.tokenizer_path)
    assert info.vocab_size > max(PROMPT) and info.max_context_length > 64
    assert info.eos_token_ids and info.is_generation and info.served_model_name


async def test_server_info_and_idle_loads(worker: Worker) -> None:
    server = await worker.stub.GetServerInfo(pb.GetServerInfoRequest())
    assert server.server_type == "grpc" and server.max_total_num_tokens > 0
    loads = await worker.stub.GetLoads(pb.GetLoadsRequest())
    assert loads.dp_rank_count == 1 and len(loads.loads) == 1
    load = loads.loads[0]
    assert (load.num_running_reqs, load.num_waiting_reqs) == (0, 0)
    assert load.max_total_num_tokens > 0 and 0.0 <= load.token_usage <= 1.0


async def test_streaming_generate_chunks_then_complete(worker: Worker) -> None:
    msgs = await collect(worker, request("stream", max_new=8, ignore_eos=True))
    kinds = [m.WhichOneof("response") for m in msgs]
    assert kinds[-1] == "complete" and kinds.count("complete") == 1 and "chunk" in kinds
    streamed = [t for m in msgs if m.WhichOneof("response") == "chunk" for t in m.chunk.token_ids]
    done = msgs[-1].complete
    assert streamed == list(done.output_ids)
    assert len(done.output_ids) == 8 and done.completion_tokens == 8 and done.finish_reason == "length"
    assert done.prompt_tokens == len(PROMPT) and all(m.request_id == "stream" for m in msgs)


async def test_non_streaming_generate_sends_only_complete(worker: Worker) -> None:
    msgs = await collect(worker, request("whole", max_new=5, stream=False, ignore_eos=True))
    assert [m.WhichOneof("response") for m in msgs] == ["complete"]
    assert len(msgs[0].complete.output_ids) == 5 and msgs[0].complete.finish_reason == "length"


async def test_greedy_is_deterministic(worker: Worker) -> None:
    first = completes(await collect(worker, request("g1", max_new=12, ignore_eos=True)))[0]
    second = completes(await collect(worker, request("g2", max_new=12, ignore_eos=True)))[0]
    assert list(first.output_ids) == list(second.output_ids)


async def test_n_samples_each_get_a_complete(worker: Worker) -> None:
    msgs = await collect(worker, request("group", max_new=6, temperature=0.8, n=3, ignore_eos=True))
    done = completes(msgs)
    assert sorted(c.index for c in done) == [0, 1, 2]
    assert all(len(c.output_ids) == 6 for c in done)
    for c in done:  # each sample's chunks add up to its own output
        streamed = [
            t
            for m in msgs
            if m.WhichOneof("response") == "chunk" and m.chunk.index == c.index
            for t in m.chunk.token_ids
        ]
        assert streamed == list(c.output_ids)


async def test_stop_token_ends_with_stop_and_matched_id(worker: Worker) -> None:
    free_run = list(completes(await collect(worker, request("free", max_new=16, ignore_eos=True)))[0].output_ids)
    k = next(i for i in range(1, len(free_run)) if free_run[i] not in free_run[:i])
    stop_id = free_run[k]
    done = completes(await collect(worker, request("stopped", max_new=16, stop_token_ids=[stop_id], ignore_eos=True)))[
        0
    ]
    assert done.finish_reason == "stop"
    assert done.WhichOneof("matched_stop") == "matched_token_id" and done.matched_token_id == stop_id
    assert list(done.output_ids) == free_run[: k + 1]


async def test_abort_mid_stream_ends_with_abort_and_frees_capacity(worker: Worker) -> None:
    max_new = await long_max_new(worker)
    call = worker.stub.Generate(request("long", max_new=max_new, ignore_eos=True))
    seen = [await call.read(), await call.read()]
    assert all(m.WhichOneof("response") == "chunk" for m in seen)
    running = (await worker.stub.GetLoads(pb.GetLoadsRequest())).loads[0]
    assert running.num_running_reqs == 1 and running.num_used_tokens > 0
    assert (await worker.stub.Abort(pb.AbortRequest(request_id="long"))).success
    rest = []
    while (msg := await call.read()) is not grpc.aio.EOF:
        rest.append(msg)
    assert rest[-1].WhichOneof("response") == "complete" and rest[-1].complete.finish_reason == "abort"
    assert len(rest[-1].complete.output_ids) < max_new
    load = await wait_idle(worker)
    assert load.num_used_tokens == 0
    assert not (await worker.stub.Abort(pb.AbortRequest(request_id="long"))).success


async def test_client_cancel_aborts_on_the_worker(worker: Worker) -> None:
    call = worker.stub.Generate(request("walkaway", max_new=await long_max_new(worker), ignore_eos=True))
    await call.read()
    call.cancel()
    load = await wait_idle(worker)
    assert load.num_used_tokens == 0
    assert not (await worker.stub.Abort(pb.AbortRequest(request_id="walkaway"))).success


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.tokenized.ClearField("input_ids"), "input_ids"),
        (lambda r: r.tokenized.input_ids.append(10_000_000), "input_ids"),
        (lambda r: setattr(r.sampling_params, "max_new_tokens", 100_000_000), "max_new_tokens"),
        (lambda r: setattr(r.sampling_params, "top_p", 1.5), "top_p"),
        (lambda r: setattr(r.sampling_params, "structural_tag", "{}"), "structural_tag"),  # regex etc. are served
        (lambda r: r.ClearField("request_id"), "request_id"),
    ],
)
async def test_bad_request_is_invalid_argument_naming_the_field(worker: Worker, mutate, field: str) -> None:
    req = request("bad")
    mutate(req)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(worker, req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (err.value.details() or "")
    await wait_idle(worker)


async def test_get_tokenizer_streams_the_model_tokenizer_files(worker: Worker) -> None:
    chunks = [c async for c in worker.stub.GetTokenizer(common_pb2.GetTokenizerRequest())]
    data = b"".join(c.data for c in chunks)
    assert chunks[-1].sha256 == hashlib.sha256(data).hexdigest()
    assert all(not c.sha256 for c in chunks[:-1])
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "tokenizer.json" in names and "tokenizer_config.json" in names
    assert (
        zipfile.ZipFile(io.BytesIO(data)).read("tokenizer.json") == (worker.model_dir / "tokenizer.json").read_bytes()
    )


async def test_flush_cache_when_idle(worker: Worker) -> None:
    await collect(worker, request("warm", max_new=2))
    resp = await worker.stub.FlushCache(common_pb2.FlushCacheRequest(timeout_s=2.0))
    assert resp.success, resp.message


async def test_unsupported_and_unknown_rpcs_are_unimplemented(worker: Worker) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await worker.stub.Embed(pb.EmbedRequest(request_id="e"))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    unknown = worker.channel.unary_unary("/sglang.grpc.scheduler.SglangScheduler/NoSuchRpc")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await unknown(b"")
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
