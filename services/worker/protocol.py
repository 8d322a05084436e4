"""SGLang scheduler protobuf <-> engine dataclasses, including the proto3-zero-default mapping.

Proto3 cannot tell "unset" from 0, and SGLang's semantic defaults are not zeros. SMG always sets the
sampling fields explicitly (temperature 1.0, top_p 1.0, top_k -1, repetition_penalty 1.0, n 1 when the
OpenAI request leaves them out), so a zero here means the client sent a literal zero or a bare message.
We map:
- temperature 0     -> greedy (as SGLang does; any temperature <= 1e-5 is greedy);
- top_p 0           -> 1.0  (SGLang would reject 0; we read it as "unset");
- top_k 0           -> -1   (off);
- repetition_penalty 0 -> 1.0 (as SGLang's own servicer does);
- n 0               -> 1;
- max_new_tokens unset (it is `optional`) -> None: generate up to the context length (SGLang's rule);
- min_p, frequency/presence penalties, min_new_tokens: 0 is also their default, taken as is.
A per-request seed is read from `sampling_params.custom_params["seed"]` (a number), since the proto has
no seed field. Structured-output constraints, logit_bias, embeddings and multimodal input are refused
with INVALID_ARGUMENT naming the field: no engine here can honour them.
"""

from __future__ import annotations

from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb

from services.worker.engine_api import GenerateInput, InvalidRequest, OutputChunk, SamplingConfig


def to_generate_input(request: pb.GenerateRequest) -> GenerateInput:
    """Parse a GenerateRequest; raises InvalidRequest naming the field for what we cannot serve."""
    if not request.request_id:
        raise InvalidRequest("request_id", "must be set")
    if request.HasField("mm_inputs") and request.mm_inputs.ByteSize():
        raise InvalidRequest("mm_inputs", "multimodal input is not supported by this worker")
    if len(request.input_embeds):
        raise InvalidRequest("input_embeds", "input embeddings are not supported by this worker")
    return GenerateInput(
        request_id=request.request_id,
        input_ids=tuple(request.tokenized.input_ids),
        sampling=to_sampling(request.sampling_params),
        return_logprob=request.return_logprob,
        top_logprobs_num=request.top_logprobs_num,
        stream=request.stream,
    )


def to_sampling(p: pb.SamplingParams) -> SamplingConfig:
    """Map proto sampling params to SGLang semantics (see the module docstring)."""
    constraint = p.WhichOneof("constraint")
    kinds = {"json_schema": "json_schema", "regex": "regex", "ebnf_grammar": "ebnf"}
    if constraint and constraint not in kinds:
        raise InvalidRequest(f"sampling_params.{constraint}", "this constraint is not supported by this worker")
    if len(p.logit_bias):
        raise InvalidRequest("sampling_params.logit_bias", "logit_bias is not supported by this worker")
    return SamplingConfig(
        temperature=p.temperature,
        top_p=p.top_p if p.top_p != 0 else 1.0,
        top_k=p.top_k if p.top_k != 0 else -1,
        min_p=p.min_p,
        repetition_penalty=p.repetition_penalty if p.repetition_penalty != 0 else 1.0,
        frequency_penalty=p.frequency_penalty,
        presence_penalty=p.presence_penalty,
        max_new_tokens=p.max_new_tokens if p.HasField("max_new_tokens") else None,
        min_new_tokens=p.min_new_tokens,
        stop=tuple(p.stop),
        stop_token_ids=tuple(p.stop_token_ids),
        ignore_eos=p.ignore_eos,
        n=p.n or 1,
        seed=_seed(p),
        constraint=(kinds[constraint], getattr(p, constraint)) if constraint else None,
    )


def _seed(p: pb.SamplingParams) -> int | None:
    if not p.HasField("custom_params") or "seed" not in p.custom_params.fields:
        return None
    value = p.custom_params.fields["seed"]
    if value.WhichOneof("kind") != "number_value" or value.number_value != int(value.number_value):
        raise InvalidRequest("sampling_params.custom_params.seed", "must be an integer")
    return int(value.number_value)


def to_sampling_proto(s: SamplingConfig) -> pb.SamplingParams:
    """The inverse mapping, every field set explicitly (used to forward requests to SGLang)."""
    p = pb.SamplingParams(
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        min_p=s.min_p,
        repetition_penalty=s.repetition_penalty,
        frequency_penalty=s.frequency_penalty,
        presence_penalty=s.presence_penalty,
        min_new_tokens=s.min_new_tokens,
        stop=list(s.stop),
        stop_token_ids=list(s.stop_token_ids),
        ignore_eos=s.ignore_eos,
        n=s.n,
        skip_special_tokens=True,
        spaces_between_special_tokens=True,
    )
    if s.max_new_tokens is not None:
        p.max_new_tokens = s.max_new_tokens
    if s.seed is not None:
        p.custom_params.update({"seed": s.seed})
    if s.constraint is not None:
        setattr(p, {"ebnf": "ebnf_grammar"}.get(s.constraint[0], s.constraint[0]), s.constraint[1])
    return p


def _logprobs(chunk: OutputChunk) -> pb.OutputLogProbs | None:
    if not chunk.logprobs:
        return None
    return pb.OutputLogProbs(
        token_logprobs=list(chunk.logprobs),
        token_ids=list(chunk.token_ids),
        top_logprobs=[
            pb.TopLogProbs(values=[lp for _, lp in top], token_ids=[t for t, _ in top]) for top in chunk.top_logprobs
        ],
    )


def chunk_response(request_id: str, chunk: OutputChunk) -> pb.GenerateResponse:
    return pb.GenerateResponse(
        request_id=request_id,
        chunk=pb.GenerateStreamChunk(
            token_ids=list(chunk.token_ids),
            prompt_tokens=chunk.prompt_tokens,
            completion_tokens=chunk.completion_tokens,
            cached_tokens=chunk.cached_tokens,
            output_logprobs=_logprobs(chunk),
            index=chunk.index,
        ),
    )


def complete_response(request_id: str, last: OutputChunk, all_logprobs: OutputChunk | None) -> pb.GenerateResponse:
    """The `complete` message of one sample; `all_logprobs` carries its cumulative logprobs, if requested."""
    complete = pb.GenerateComplete(
        output_ids=list(last.output_ids),
        finish_reason=last.finish_reason or "stop",
        prompt_tokens=last.prompt_tokens,
        completion_tokens=last.completion_tokens,
        cached_tokens=last.cached_tokens,
        output_logprobs=_logprobs(all_logprobs) if all_logprobs else None,
        index=last.index,
        spec_accepted_tokens=last.spec_accepted_tokens,
        spec_draft_tokens=last.spec_draft_tokens,
    )
    if last.matched_token_id is not None:
        complete.matched_token_id = last.matched_token_id
    elif last.matched_stop_str is not None:
        complete.matched_stop_str = last.matched_stop_str
    return pb.GenerateResponse(request_id=request_id, complete=complete)


def from_response(resp: pb.GenerateResponse, stream_counts: dict[int, int]) -> OutputChunk | None:
    """A child SGLang's response as an OutputChunk (the sglang proxy engine); None for a chunk-less message.

    `stream_counts` tracks, per index, how many tokens the chunks already carried, so that the final
    `complete` only adds the tokens not yet streamed (non-streaming responses carry them all).
    """
    kind = resp.WhichOneof("response")
    if kind == "chunk":
        c = resp.chunk
        stream_counts[c.index] = stream_counts.get(c.index, 0) + len(c.token_ids)
        lp = c.output_logprobs
        return OutputChunk(
            index=c.index,
            token_ids=tuple(c.token_ids),
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.completion_tokens,
            cached_tokens=c.cached_tokens,
            logprobs=tuple(lp.token_logprobs),
            top_logprobs=tuple(tuple(zip(t.token_ids, t.values, strict=False)) for t in lp.top_logprobs),
        )
    if kind != "complete":
        return None
    c = resp.complete
    seen = stream_counts.get(c.index, 0)
    matched = c.WhichOneof("matched_stop")
    return OutputChunk(
        index=c.index,
        token_ids=tuple(c.output_ids[seen:]),
        prompt_tokens=c.prompt_tokens,
        completion_tokens=c.completion_tokens,
        cached_tokens=c.cached_tokens,
        finished=True,
        finish_reason=c.finish_reason if c.finish_reason in ("stop", "length", "abort") else "stop",  # type: ignore[arg-type]
        matched_token_id=c.matched_token_id if matched == "matched_token_id" else None,
        matched_stop_str=c.matched_stop_str if matched == "matched_stop_str" else None,
        output_ids=tuple(c.output_ids),
        spec_accepted_tokens=c.spec_accepted_tokens,
        spec_draft_tokens=c.spec_draft_tokens,
    )
