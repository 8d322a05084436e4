"""The one `SglangScheduler` servicer, over any `Engine` (torch, sim, sglang proxy)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime

import grpc
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from mimo_client.v1 import worker_control_pb2_grpc as control_pb_grpc
from smg_grpc_proto.generated import common_pb2
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.common.server import Service
from services.text.modeldir import bundle_chunks, tokenizer_bundle
from services.worker import kv_events, metrics
from services.worker.control import SERVICE_NAME as CONTROL_SERVICE_NAME
from services.worker.control import VERSION_METADATA, ControlServicer, GenerationGate
from services.worker.engine_api import (
    Engine,
    EngineError,
    EngineFull,
    EngineLoad,
    EngineUnavailable,
    InvalidRequest,
    OutputChunk,
)
from services.worker.protocol import chunk_response, complete_response, to_generate_input
from services.worker.stream_stats import StreamStats

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SglangScheduler"].full_name
LOAD_SECTIONS = frozenset({"core", "memory", "spec", "lora", "disagg", "queues", "all"})


class SchedulerServicer(pb_grpc.SglangSchedulerServicer):
    """Turns SGLang's scheduler protocol into engine calls; keeps no model logic."""

    def __init__(self, engine: Engine, gate: GenerationGate | None = None) -> None:
        self._engine = engine
        self._gate = gate or GenerationGate(engine)
        self._start_time = time.time()
        self._last_receive = 0.0
        self._active = 0
        self.is_draining = False

    async def begin_drain(self) -> None:
        """From now on HealthCheck answers unhealthy (SGLang's own drain behaviour)."""
        self.is_draining = True

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        self._last_receive = time.time()
        try:
            req = to_generate_input(request)
            self._engine.validate(req)
        except InvalidRequest as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except EngineUnavailable as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        stats = StreamStats(time.perf_counter(), req.return_logprob)
        self._active += 1
        try:
            async with self._gate.admit(req.request_id) as version, aclosing(self._engine.generate(req)) as chunks:
                await context.send_initial_metadata(((VERSION_METADATA, version),))
                async for chunk in chunks:
                    stats.observe(chunk)
                    for response in _responses(req.request_id, chunk, req.stream, stats):
                        yield response
        except EngineFull as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{e}; retry later or on another worker")
        except EngineUnavailable as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        except InvalidRequest as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except EngineError as e:
            await context.abort(grpc.StatusCode.INTERNAL, str(e))
        except asyncio.CancelledError:
            log.debug("generate cancelled by the client", extra={"request_id": req.request_id})
            await self._engine.abort(req.request_id)
            raise
        finally:
            self._active -= 1

    async def HealthCheck(
        self, request: pb.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> pb.HealthCheckResponse:
        if self.is_draining:
            return pb.HealthCheckResponse(healthy=False, message="draining: not taking new requests")
        health = await self._engine.health()
        return pb.HealthCheckResponse(healthy=health.is_healthy, message=health.message)

    async def Abort(self, request: pb.AbortRequest, context: grpc.aio.ServicerContext) -> pb.AbortResponse:
        found = await self._engine.abort(request.request_id)
        return pb.AbortResponse(success=found, message=f"{request.request_id} {'aborted' if found else 'not found'}")

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        info = await self._call(context, self._engine.model_info)
        return pb.GetModelInfoResponse(
            model_path=info.model_path,
            tokenizer_path=info.tokenizer_path,
            is_generation=True,
            weight_version=info.weight_version,
            served_model_name=info.served_model_name,
            max_context_length=info.max_context_length,
            vocab_size=info.vocab_size,
            model_type=info.model_type,
            eos_token_ids=list(info.eos_token_ids),
            pad_token_id=info.pad_token_id,
            bos_token_id=info.bos_token_id,
            max_req_input_len=info.max_context_length - 1,
            architectures=list(info.architectures),
        )

    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetServerInfoResponse:
        info = await self._call(context, self._engine.model_info)
        load = self._engine.load()
        server_args, scheduler_info = Struct(), Struct()
        server_args.update(
            {
                **self._engine.server_args(),
                "model_path": info.model_path,
                "engine": info.engine,
                "weight_version": info.weight_version,
            }
        )
        scheduler_info.update(
            {"max_total_num_tokens": load.max_kv_tokens, "max_running_requests": load.max_running_requests}
        )
        started = Timestamp()
        started.FromSeconds(int(self._start_time))
        return pb.GetServerInfoResponse(
            server_args=server_args,
            scheduler_info=scheduler_info,
            active_requests=self._active,
            is_paused=self._gate.is_paused,
            last_receive_timestamp=self._last_receive,
            uptime_seconds=time.time() - self._start_time,
            sglang_version=f"mimo-serve {info.engine} {info.engine_version}".strip(),
            server_type="grpc",
            start_time=started,
            max_total_num_tokens=load.max_kv_tokens,
        )

    async def GetLoads(self, request: pb.GetLoadsRequest, context: grpc.aio.ServicerContext) -> pb.GetLoadsResponse:
        unknown = set(request.include) - LOAD_SECTIONS
        if unknown:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"include: unknown sections {sorted(unknown)}")
        if request.HasField("dp_rank") and request.dp_rank != 0:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"dp_rank: {request.dp_rank} (this worker has rank 0 only)"
            )
        load = _scheduler_load(self._engine.load(), set(request.include) or {"all"})
        info = self._engine.model_info()
        return pb.GetLoadsResponse(
            timestamp=datetime.now(UTC).isoformat(),
            version=f"mimo-serve {info.engine} {info.engine_version}".strip(),
            dp_rank_count=1,
            loads=[load],
            aggregate=pb.AggregateMetrics(
                total_running_reqs=load.num_running_reqs,
                total_waiting_reqs=load.num_waiting_reqs,
                total_reqs=load.num_total_reqs,
                avg_token_usage=load.token_usage,
                avg_throughput=load.gen_throughput,
                avg_utilization=load.utilization,
            ),
        )

    async def GetTokenizer(
        self, request: common_pb2.GetTokenizerRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.GetTokenizerChunk]:
        info = await self._call(context, self._engine.model_info)
        try:
            data = await asyncio.to_thread(tokenizer_bundle, info.tokenizer_path)
        except FileNotFoundError as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        for piece, digest in bundle_chunks(data):
            yield common_pb2.GetTokenizerChunk(data=piece, sha256=digest)

    async def FlushCache(
        self, request: common_pb2.FlushCacheRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.FlushCacheResponse:
        deadline = time.monotonic() + max(0.0, request.timeout_s)
        while _busy(self._engine.load()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        flushed = await self._engine.flush_cache()
        message = "cache flushed" if flushed else "requests are in flight; set timeout_s to wait for idle"
        return common_pb2.FlushCacheResponse(success=flushed, message=message)

    async def _call(self, context: grpc.aio.ServicerContext, fn):
        try:
            return fn()
        except EngineUnavailable as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))

    # Everything else in the service answers UNIMPLEMENTED with a reason.
    async def _unimplemented(self, context: grpc.aio.ServicerContext, rpc: str) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{rpc} is not supported by mimo-serve workers")

    async def Embed(self, request, context):
        await self._unimplemented(context, "Embed")

    async def StartProfile(self, request, context):
        await self._unimplemented(context, "StartProfile")

    async def StopProfile(self, request, context):
        await self._unimplemented(context, "StopProfile")

    async def SubscribeKvEvents(self, request, context):
        """The engine's prefix-cache blocks as SMG's KV events (engines without a log: UNIMPLEMENTED)."""
        events = getattr(self._engine, "kv_event_log", None)
        if events is None:
            await self._unimplemented(context, "SubscribeKvEvents")
            return
        async with aclosing(events.subscribe(request.start_sequence_number)) as batches:
            async for batch in batches:
                yield kv_events.to_proto(batch, events.block_size)

    async def LoadLoRAAdapter(self, request, context):
        await self._unimplemented(context, "LoadLoRAAdapter")

    async def UnloadLoRAAdapter(self, request, context):
        await self._unimplemented(context, "UnloadLoRAAdapter")

    async def ListLoadedLoRAAdapters(self, request, context):
        await self._unimplemented(context, "ListLoadedLoRAAdapters")


def _busy(load: EngineLoad) -> bool:
    return load.running_requests + load.waiting_requests > 0


def _responses(request_id: str, chunk: OutputChunk, stream: bool, stats: StreamStats) -> list[pb.GenerateResponse]:
    """Streaming: a chunk per engine chunk, then `complete` when a sample ends; otherwise `complete` only."""
    out = [chunk_response(request_id, chunk)] if stream else []
    if chunk.finished:
        out.append(complete_response(request_id, chunk, stats.all_logprobs(chunk.index)))
    return out


def _scheduler_load(load: EngineLoad, include: set[str]) -> pb.SchedulerLoad:
    wants = lambda section: "all" in include or section in include  # noqa: E731
    out = pb.SchedulerLoad(
        dp_rank=0,
        num_running_reqs=load.running_requests,
        num_waiting_reqs=load.waiting_requests,
        num_total_reqs=load.running_requests + load.waiting_requests,
        num_used_tokens=load.used_kv_tokens,
        max_total_num_tokens=load.max_kv_tokens,
        token_usage=load.token_usage,
        gen_throughput=load.gen_throughput_tps,
        cache_hit_rate=load.cache_hit_rate,
        utilization=load.running_requests / load.max_running_requests if load.max_running_requests else 0.0,
        max_running_requests=load.max_running_requests,
        num_waiting_uncached_tokens=load.waiting_uncached_tokens,
    )
    if wants("spec") and load.spec_accept_length is not None:
        out.speculative.CopyFrom(
            pb.SpeculativeMetrics(accept_length=load.spec_accept_length, accept_rate=load.spec_accept_rate or 0.0)
        )
    if wants("memory"):
        out.memory.CopyFrom(pb.MemoryMetrics(token_capacity=load.max_kv_tokens))
    if wants("queues"):
        out.queues.CopyFrom(pb.QueueMetrics(waiting=load.waiting_requests))
    return out


def build_service(engine: Engine) -> Service:
    """The worker's Service for `services.common.server.start/run`: starts the engine, drains, stops it."""
    gate = GenerationGate(engine)
    servicer, control = SchedulerServicer(engine, gate), ControlServicer(engine, gate)
    metrics.bind_engine(engine.load)

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_SglangSchedulerServicer_to_server(servicer, server)
        control_pb_grpc.add_WorkerControlServicer_to_server(control, server)

    async def report_version() -> None:
        metrics.set_weight_version(engine.model_info().weight_version)

    return Service(
        register=register,
        names=[SERVICE_NAME, CONTROL_SERVICE_NAME],
        on_start=[engine.start, report_version],
        on_drain=[servicer.begin_drain],
        on_stop=[engine.stop],
    )
