"""`SglangEngine`: the `Engine` that fronts a supervised SGLang child over its own gRPC protocol.

The worker's servicer stays in front so that drain, health and `mimo_worker_*` metrics behave the same
for every engine: new requests stop at our port on SIGTERM while the child finishes the running ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncGenerator, Mapping
from dataclasses import asdict, replace

import aiohttp
import grpc
from smg_grpc_proto.generated import common_pb2
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.worker.engine_api import (
    EngineError,
    EngineFull,
    EngineLoad,
    EngineModelInfo,
    EngineUnavailable,
    GenerateInput,
    Health,
    InvalidRequest,
    OutputChunk,
    WeightsRejected,
    validate_common,
)
from services.worker.engines.sglang.child_metrics import ChildMetrics
from services.worker.engines.sglang.launcher import SglangChild
from services.worker.engines.sglang.profile import SglangProfile
from services.worker.protocol import from_response, to_sampling_proto

log = logging.getLogger(__name__)

LOAD_POLL_S = 0.5
ADMIN_TIMEOUT = aiohttp.ClientTimeout(total=1800)  # reading a 15.7 GB checkpoint from a shared volume


class SglangEngine:
    """Forwards generation to the child; caches its GetLoads for the metrics and our own GetLoads.

    With `child_metrics`, SGLang's own metrics join ours on the worker's /metrics from start to stop.
    """

    def __init__(self, profile: SglangProfile, child: SglangChild, child_metrics: ChildMetrics | None = None) -> None:
        self._profile = profile
        self._child = child
        self._child_metrics = child_metrics
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.SglangSchedulerStub | None = None
        self._info: EngineModelInfo | None = None
        self._load = EngineLoad()
        self._tasks: list[asyncio.Task[None]] = []
        self._is_stopping = False
        self._failure = ""

    async def start(self) -> None:
        """Start SGLang and wait for its HealthCheck; readiness (grpc.health SERVING) follows this."""
        self._channel = grpc.aio.insecure_channel(self._child.target)
        self._stub = pb_grpc.SglangSchedulerStub(self._channel)
        if self._child_metrics is not None:
            self._child_metrics.register()  # mimo_worker_sglang_metrics_up is 0 while SGLang loads
        await self._child.start()
        try:
            await self._child.wait_healthy(self._stub, self._profile.startup_timeout_s)
            self._info = await self._read_model_info(self._stub)
        except BaseException:
            await self._child.stop(self._profile.stop_timeout_s)
            if self._child_metrics is not None:
                self._child_metrics.unregister()
            raise
        self._tasks = [asyncio.create_task(self._poll_loads()), asyncio.create_task(self._watch_child())]

    async def stop(self) -> None:
        """Called after the drain: stop SGLang (SIGTERM, then SIGKILL after stop_timeout_s)."""
        self._is_stopping = True
        for task in self._tasks:
            task.cancel()
        await self._child.stop(self._profile.stop_timeout_s)
        if self._child_metrics is not None:
            self._child_metrics.unregister()
        if self._channel is not None:
            await self._channel.close()

    async def _read_model_info(self, stub: pb_grpc.SglangSchedulerStub) -> EngineModelInfo:
        m = await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
        server = await stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30)
        return EngineModelInfo(
            model_path=m.model_path or self._profile.model_path,
            tokenizer_path=m.tokenizer_path or m.model_path or self._profile.model_path,
            served_model_name=m.served_model_name,
            max_context_length=m.max_context_length,
            vocab_size=m.vocab_size,
            eos_token_ids=tuple(m.eos_token_ids),
            pad_token_id=m.pad_token_id,
            bos_token_id=m.bos_token_id,
            architectures=tuple(m.architectures),
            model_type=m.model_type,
            weight_version=m.weight_version,
            engine="sglang",
            engine_version=server.sglang_version,
        )

    async def _poll_loads(self) -> None:
        assert self._stub is not None
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                resp = await self._stub.GetLoads(pb.GetLoadsRequest(include=["all"]), timeout=5)
                self._load = _to_load(resp)
            await asyncio.sleep(LOAD_POLL_S)

    async def _watch_child(self) -> None:
        code = await self._child.wait_exit()
        if not self._is_stopping:
            self._failure = f"sglang exited unexpectedly with code {code}"
            log.error(self._failure)
            os.kill(os.getpid(), signal.SIGTERM)  # drain and exit: the pod is restarted

    def _ready_stub(self) -> pb_grpc.SglangSchedulerStub:
        if self._failure:
            raise EngineUnavailable(self._failure)
        if self._stub is None or self._info is None:
            raise EngineUnavailable("sglang is still starting")
        return self._stub

    def model_info(self) -> EngineModelInfo:
        self._ready_stub()
        assert self._info is not None
        return self._info

    def validate(self, req: GenerateInput) -> None:
        validate_common(req, self.model_info())

    async def generate(self, req: GenerateInput) -> AsyncGenerator[OutputChunk, None]:
        stub = self._ready_stub()
        call = stub.Generate(
            pb.GenerateRequest(
                request_id=req.request_id,
                tokenized=pb.TokenizedInput(input_ids=list(req.input_ids)),
                sampling_params=to_sampling_proto(req.sampling),
                return_logprob=req.return_logprob,
                top_logprobs_num=req.top_logprobs_num,
                logprob_start_len=-1,
                stream=req.stream,
            )
        )
        streamed: dict[int, int] = {}
        try:
            async for resp in call:
                chunk = from_response(resp, streamed)
                if chunk is not None:
                    yield chunk
        except grpc.aio.AioRpcError as e:
            raise _engine_error(e) from e
        finally:
            call.cancel()  # no-op when done; otherwise SGLang sees the cancel and aborts the request

    async def abort(self, request_id: str) -> bool:
        resp = await self._ready_stub().Abort(pb.AbortRequest(request_id=request_id), timeout=10)
        return bool(resp.success)

    def load(self) -> EngineLoad:
        return self._load

    async def update_weights(self, model_path: str, weight_version: str) -> None:
        """SGLang's `POST /update_weights_from_disk` (its documented RL API) on the child's admin port.

        Pausing is done in front of the child, by the worker's own gate, so SGLang sees no request during it.
        """
        info = self.model_info()
        if not self._profile.admin_url:
            raise EngineUnavailable(
                "sglang: weight updates need the profile's admin_url (SGLang's HTTP admin API); "
                "the --grpc-mode scheduler protocol has no weight-update RPC"
            )
        body = {"model_path": model_path, "weight_version": weight_version, "flush_cache": True}
        url = self._profile.admin_url.rstrip("/") + "/update_weights_from_disk"
        try:
            async with aiohttp.ClientSession() as session, session.post(url, json=body, timeout=ADMIN_TIMEOUT) as r:
                reply = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise EngineUnavailable(f"sglang admin API at {url}: {e!r}") from e
        if not reply.get("success"):
            raise WeightsRejected(f"model_path: sglang refused {model_path}: {reply.get('message', reply)}")
        self._info = replace(info, weight_version=weight_version)

    async def flush_cache(self) -> bool:
        resp = await self._ready_stub().FlushCache(common_pb2.FlushCacheRequest(), timeout=30)
        return bool(resp.success)

    async def health(self) -> Health:
        try:
            resp = await self._ready_stub().HealthCheck(pb.HealthCheckRequest(), timeout=30)
        except EngineUnavailable as e:
            return Health(False, str(e))
        except grpc.aio.AioRpcError as e:
            return Health(False, f"sglang health check failed: {e.code().name}")
        return Health(resp.healthy, resp.message)

    def server_args(self) -> Mapping[str, str | int | float | bool]:
        flat = {k: v for k, v in asdict(self._profile).items() if isinstance(v, str | int | float | bool)}
        return {**flat, "command": " ".join(self._child.command)}


def _engine_error(e: grpc.aio.AioRpcError) -> EngineError:
    details = e.details() or e.code().name
    if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return EngineFull(f"sglang: {details}")
    if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidRequest("sglang", details)
    return EngineUnavailable(f"sglang: {e.code().name}: {details}")


def _to_load(resp: pb.GetLoadsResponse) -> EngineLoad:
    loads = list(resp.loads)
    if not loads:
        return EngineLoad()
    spec = [x.speculative for x in loads if x.HasField("speculative")]
    return EngineLoad(
        running_requests=sum(x.num_running_reqs for x in loads),
        waiting_requests=sum(x.num_waiting_reqs for x in loads),
        used_kv_tokens=sum(x.num_used_tokens for x in loads),
        max_kv_tokens=sum(x.max_total_num_tokens for x in loads),
        cache_hit_rate=sum(x.cache_hit_rate for x in loads) / len(loads),
        gen_throughput_tps=sum(x.gen_throughput for x in loads),
        waiting_uncached_tokens=sum(x.num_waiting_uncached_tokens for x in loads),
        max_running_requests=sum(x.max_running_requests for x in loads),
        spec_accept_length=sum(s.accept_length for s in spec) / len(spec) if spec else None,
        spec_accept_rate=sum(s.accept_rate for s in spec) / len(spec) if spec else None,
    )
