"""Each SDK method as a `CallSpec`: which RPC, the request, how to read the reply, how safe it is to retry.

The sync and asyncio clients only execute specs, so every method's logic lives here once."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from mimo_client import _convert
from mimo_client import types as t
from mimo_client.retry import Safety
from mimo_client.v1 import admin_pb2, inference_pb2, tokenizer_pb2

T = TypeVar("T", covariant=True)
IDEMPOTENT = Safety.IDEMPOTENT
ONCE = Safety.UNAVAILABLE_BEFORE_RESPONSE


@dataclass(frozen=True, slots=True)
class CallSpec(Generic[T]):
    """One RPC to make: `stub` is "inference", "tokenizer", "verifier", "rollout" or "admin"; `method` the RPC name.

    For a stream, `convert` maps each message and may return None to skip one."""

    stub: str
    method: str
    request: Any
    convert: Callable[[Any], T]
    safety: Safety


def generate(prompt: str | Sequence[int], sampling: Mapping[str, Any], **fields: Any) -> CallSpec[t.Completion]:
    request = _convert.generate_request(prompt, sampling, **fields)
    return CallSpec("inference", "Generate", request, t.completion_from_pb, ONCE)


def generate_stream(prompt: str | Sequence[int], sampling: Mapping[str, Any], **fields: Any) -> CallSpec[t.StreamDelta]:
    request = _convert.generate_request(prompt, sampling, **fields)
    return CallSpec("inference", "GenerateStream", request, t.delta_from_pb, ONCE)


def chat(messages: _convert.ChatInput, sampling: Mapping[str, Any], **fields: Any) -> CallSpec[t.Completion]:
    request = _convert.chat_request(messages, sampling, **fields)
    return CallSpec("inference", "Chat", request, t.completion_from_pb, ONCE)


def chat_stream(messages: _convert.ChatInput, sampling: Mapping[str, Any], **fields: Any) -> CallSpec[t.StreamDelta]:
    request = _convert.chat_request(messages, sampling, **fields)
    return CallSpec("inference", "ChatStream", request, t.delta_from_pb, ONCE)


def list_models() -> CallSpec[list[t.ModelInfo]]:
    return CallSpec("inference", "ListModels", inference_pb2.ListModelsRequest(), t.models_from_pb, IDEMPOTENT)


def tokenize(
    texts: str | Sequence[str], add_special_tokens: bool, return_offsets: bool
) -> CallSpec[t.TokenizeResult | list[t.TokenizeResult]]:
    batch, is_single = _convert.as_batch(texts)

    def convert(pb: tokenizer_pb2.TokenizeResponse) -> t.TokenizeResult | list[t.TokenizeResult]:
        results = t.encodings_from_pb(pb)
        return results[0] if is_single else results

    request = _convert.tokenize_request(batch, add_special_tokens, return_offsets)
    return CallSpec("tokenizer", "Tokenize", request, convert, IDEMPOTENT)


def detokenize(ids: Sequence[int] | Sequence[Sequence[int]], skip_special_tokens: bool) -> CallSpec[str | list[str]]:
    sequences, is_single = _convert.as_sequences(ids)

    def convert(pb: tokenizer_pb2.DetokenizeResponse) -> str | list[str]:
        return pb.texts[0] if is_single else list(pb.texts)

    request = tokenizer_pb2.DetokenizeRequest(sequences=sequences, skip_special_tokens=skip_special_tokens)
    return CallSpec("tokenizer", "Detokenize", request, convert, IDEMPOTENT)


def apply_chat_template(messages: _convert.ChatInput, add_generation_prompt: bool) -> CallSpec[t.ChatTemplateResult]:
    request = _convert.apply_chat_template_request(messages, add_generation_prompt)
    return CallSpec("tokenizer", "ApplyChatTemplate", request, t.chat_template_from_pb, IDEMPOTENT)


def count_tokens(texts: str | Sequence[str], add_special_tokens: bool) -> CallSpec[int | list[int]]:
    batch, is_single = _convert.as_batch(texts)

    def convert(pb: tokenizer_pb2.CountTokensResponse) -> int | list[int]:
        return pb.counts[0] if is_single else list(pb.counts)

    request = tokenizer_pb2.CountTokensRequest(texts=batch, add_special_tokens=add_special_tokens)
    return CallSpec("tokenizer", "CountTokens", request, convert, IDEMPOTENT)


def verify(tasks: Sequence[t.VerifyTask]) -> CallSpec[list[t.VerifyResult]]:
    def convert(pb: Any) -> list[t.VerifyResult]:
        return sorted((t.verify_result_from_pb(r) for r in pb.results), key=lambda r: r.index)

    return CallSpec("verifier", "Verify", _convert.verify_request(tasks), convert, IDEMPOTENT)


def verify_one(task: t.VerifyTask) -> CallSpec[t.VerifyResult]:
    def convert(pb: Any) -> t.VerifyResult:
        if len(pb.results) != 1:
            raise ValueError(f"the verifier answered {len(pb.results)} results to one task")
        return t.verify_result_from_pb(pb.results[0])

    return CallSpec("verifier", "Verify", _convert.verify_request([task]), convert, IDEMPOTENT)


def math_task(references: str | Sequence[str]) -> t.MathTask:
    return t.MathTask([references] if isinstance(references, str) else list(references))


def code_task(tests: Sequence[t.CodeTest | Mapping[str, Any]], **options: Any) -> t.CodeTask:
    """`tests` as `CodeTest` or dicts with the same keys; `options` are `CodeTask`'s other fields."""
    parsed = [test if isinstance(test, t.CodeTest) else t.CodeTest(**test) for test in tests]
    return t.CodeTask(parsed, **options)


def rollout(
    prompts: Sequence[t.RolloutPrompt], samples_per_prompt: int, sampling: Mapping[str, Any], **fields: Any
) -> tuple[CallSpec[t.RolloutEvent | None], int]:
    """The spec and the number of samples the rollout will produce (for a progress bar)."""
    request = _convert.rollout_request(prompts, sampling, samples_per_prompt=samples_per_prompt, **fields)
    return CallSpec("rollout", "Rollout", request, t.rollout_event_from_pb, ONCE), len(prompts) * max(
        1, samples_per_prompt
    )


def update_weights(
    model_path: str, weight_version: str, abort_running: bool, timeout_s: float
) -> CallSpec[t.WeightUpdate]:
    request = admin_pb2.FleetUpdateRequest(
        model_path=model_path, weight_version=weight_version, abort_running=abort_running, timeout_s=timeout_s
    )
    # ONCE: a second update while the first runs is ABORTED; the SDK never repeats one after a response
    return CallSpec("admin", "UpdateWeights", request, t.weight_update_from_pb, ONCE)


def weight_versions() -> CallSpec[t.WeightVersions]:
    request = admin_pb2.GetWeightVersionsRequest()
    return CallSpec("admin", "GetWeightVersions", request, t.weight_versions_from_pb, IDEMPOTENT)
