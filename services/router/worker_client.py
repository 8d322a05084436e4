"""The router's client of one worker (SGLang's scheduler protocol): domain requests in, domain events out.

The only router module that knows `sglang_scheduler_pb2`; every grpc failure becomes a `WorkerCallFailed`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf import struct_pb2
from mimo_client.v1 import worker_control_pb2 as control_pb
from mimo_client.v1 import worker_control_pb2_grpc as control_grpc
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.common.tracing import client_interceptors
from services.router.domain import (
    SampleComplete,
    TokenChunk,
    TokenLogprob,
    WorkerCallFailed,
    WorkerEvent,
    WorkerLoad,
    WorkerModelInfo,
    WorkerRequest,
)

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.ABORTED,
}
TRANSPORT_FAILURES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


def failure(e: grpc.aio.AioRpcError) -> WorkerCallFailed:
    code = e.code()
    return WorkerCallFailed(
        code.name,
        e.details() or "",
        transport=code in TRANSPORT_FAILURES,
        retryable=code in RETRYABLE,
        deadline=code == grpc.StatusCode.DEADLINE_EXCEEDED,
        invalid=code == grpc.StatusCode.INVALID_ARGUMENT,
    )


def worker_request(r: WorkerRequest) -> pb.GenerateRequest:
    """Every sampling field set explicitly: proto3 zeros are not SGLang's defaults."""
    s = r.sampling
    sampling = pb.SamplingParams(
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        min_p=s.min_p,
        repetition_penalty=s.repetition_penalty,
        frequency_penalty=s.frequency_penalty,
        presence_penalty=s.presence_penalty,
        max_new_tokens=r.max_new_tokens,
        stop=list(s.stop),
        stop_token_ids=list(s.stop_token_ids),
        n=r.n,
        ignore_eos=s.ignore_eos,
        no_stop_trim=s.include_stop_str_in_output,
        skip_special_tokens=s.skip_special_tokens,
    )
    if s.json_schema is not None:
        sampling.json_schema = s.json_schema
    elif s.regex is not None:
        sampling.regex = s.regex
    elif s.ebnf is not None:
        sampling.ebnf_grammar = s.ebnf
    if s.seed is not None:
        sampling.custom_params.CopyFrom(
            struct_pb2.Struct(fields={"seed": struct_pb2.Value(number_value=float(s.seed))})
        )
    return pb.GenerateRequest(
        request_id=r.request_id,
        tokenized=pb.TokenizedInput(input_ids=r.input_ids),
        sampling_params=sampling,
        return_logprob=r.return_logprobs,
        top_logprobs_num=r.top_logprobs if r.return_logprobs else 0,
        logprob_start_len=-1,
        stream=r.stream,
    )


def logprobs_of(out: pb.OutputLogProbs) -> tuple[TokenLogprob, ...]:
    tops = out.top_logprobs
    return tuple(
        TokenLogprob(
            token_id,
            logprob,
            tuple(zip(tops[i].token_ids, tops[i].values, strict=False)) if i < len(tops) else (),
        )
        for i, (token_id, logprob) in enumerate(zip(out.token_ids, out.token_logprobs, strict=False))
    )


def event_of(response: pb.GenerateResponse, weight_version: str = "") -> WorkerEvent:
    if response.HasField("chunk"):
        chunk = response.chunk
        lps = logprobs_of(chunk.output_logprobs) if chunk.HasField("output_logprobs") else ()
        return TokenChunk(chunk.index, tuple(chunk.token_ids), lps)
    done = response.complete
    return SampleComplete(
        index=done.index,
        output_ids=tuple(done.output_ids),
        logprobs=logprobs_of(done.output_logprobs) if done.HasField("output_logprobs") else None,
        finish_reason=done.finish_reason,
        matched_stop_str=done.matched_stop_str if done.WhichOneof("matched_stop") == "matched_stop_str" else None,
        cached_tokens=done.cached_tokens,
        weight_version=weight_version,
    )


def load_of(resp: pb.GetLoadsResponse) -> WorkerLoad:
    if not resp.loads:
        return WorkerLoad()
    first = resp.loads[0]
    spec = first.speculative if first.HasField("speculative") else None
    return WorkerLoad(
        num_running=sum(x.num_running_reqs for x in resp.loads),
        num_waiting=sum(x.num_waiting_reqs for x in resp.loads),
        token_usage=max(x.token_usage for x in resp.loads),
        cache_hit_rate=first.cache_hit_rate,
        accept_length=spec.accept_length if spec else 0.0,
        max_running=sum(x.max_running_requests for x in resp.loads),
    )


VERSION_METADATA = "mimo-weight-version"  # services/worker/control.py: the version a request ran under


class WorkerClient:
    """One channel to one worker."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._channel = grpc.aio.insecure_channel(url, options=CHANNEL_OPTIONS, interceptors=client_interceptors())
        self._stub = pb_grpc.SglangSchedulerStub(self._channel)
        self._control = control_grpc.WorkerControlStub(self._channel)  # mimo.v1.WorkerControl, same port

    async def generate(self, request: WorkerRequest, timeout_s: float | None) -> AsyncIterator[WorkerEvent]:
        """The worker's events; leaving early (or being cancelled) cancels the call, which aborts it there."""
        call = self._stub.Generate(worker_request(request), timeout=timeout_s)
        try:
            version = ""
            async for response in call:
                if not version:  # sent by the worker before its first message
                    version = dict(await call.initial_metadata() or ()).get(VERSION_METADATA, "")
                yield event_of(response, str(version))
        except grpc.aio.AioRpcError as e:
            raise failure(e) from e
        finally:
            if not call.done():
                call.cancel()

    async def abort(self, request_id: str, reason: str) -> None:
        try:
            await self._stub.Abort(pb.AbortRequest(request_id=request_id, reason=reason), timeout=2)
        except grpc.aio.AioRpcError as e:
            raise failure(e) from e

    async def health(self, timeout_s: float) -> tuple[bool, str]:
        try:
            health = await self._stub.HealthCheck(pb.HealthCheckRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as e:
            raise failure(e) from e
        return health.healthy, health.message

    async def load(self, timeout_s: float) -> WorkerLoad:
        try:
            return load_of(await self._stub.GetLoads(pb.GetLoadsRequest(), timeout=timeout_s))
        except grpc.aio.AioRpcError as e:
            raise failure(e) from e

    async def model_info(self, timeout_s: float) -> WorkerModelInfo:
        try:
            info = await self._stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as e:
            raise failure(e) from e
        return WorkerModelInfo(info.model_path, info.max_context_length, info.vocab_size, info.weight_version)

    # --- mimo.v1.WorkerControl (the fleet's weight updates) --------------------------------------------------
    async def pause(self, abort: bool, timeout_s: float) -> int:
        """Stop admitting; abort ends in-flight requests (partial outputs), wait lets them finish. Returns how many
        were aborted."""
        mode = control_pb.PAUSE_MODE_ABORT if abort else control_pb.PAUSE_MODE_WAIT
        try:
            reply = await self._control.PauseGeneration(
                control_pb.PauseGenerationRequest(mode=mode, timeout_s=timeout_s), timeout=timeout_s + 5
            )
        except grpc.aio.AioRpcError as e:
            raise failure(e) from e
        return reply.num_aborted

    async def resume(self) -> None:
        try:
            await self._control.ContinueGeneration(control_pb.ContinueGenerationRequest(), timeout=5)
        except grpc.aio.AioRpcError as e:
            raise failure(e) from e

    async def update_weights(self, model_path: str, weight_version: str, timeout_s: float) -> float:
        """Load a checkpoint in place (the prefix cache flushed); returns the worker's load time."""
        request = control_pb.UpdateWeightsRequest(
            model_path=model_path, weight_version=weight_version, flush_cache=True, timeout_s=timeout_s
        )
        try:
            reply = await self._control.UpdateWeights(request, timeout=timeout_s + 5)
        except grpc.aio.AioRpcError as e:
            raise failure(e) from e
        return reply.load_s

    async def weight_version(self, timeout_s: float) -> str:
        try:
            info = await self._control.GetWeightVersion(control_pb.GetWeightVersionRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as e:
            raise failure(e) from e
        return info.weight_version

    async def close(self) -> None:
        await self._channel.close()
