"""Public requests → worker requests: validation naming the field, MiMo's sampling defaults made explicit."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf import struct_pb2
from mimo_client.v1 import common_pb2
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb

MAX_SAMPLES = 64
MAX_TOP_LOGPROBS = 20
MAX_STOP_STRINGS = 16
DEFAULT_MAX_NEW_TOKENS = 2048
ROLES = {"system", "user", "assistant", "tool"}


class InvalidRequest(ValueError):
    """Bad input; `field` names the request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class SamplingDefaults:
    """Chat and completions use MiMo's evaluation setting; rollouts use its RL setting (1.0, 1.0)."""

    temperature: float = 0.6
    top_p: float = 0.95


CHAT_DEFAULTS = SamplingDefaults()
RL_DEFAULTS = SamplingDefaults(temperature=1.0, top_p=1.0)


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise InvalidRequest(field, message)


def validate_sampling(s: common_pb2.SamplingParams, prefix: str = "sampling") -> None:
    def finite(name: str) -> bool:
        return not s.HasField(name) or math.isfinite(getattr(s, name))

    for name in ("temperature", "top_p", "min_p", "repetition_penalty", "frequency_penalty", "presence_penalty"):
        _check(finite(name), f"{prefix}.{name}", "must be a finite number")
    _check(not s.HasField("temperature") or s.temperature >= 0, f"{prefix}.temperature", "must be >= 0")
    _check(not s.HasField("top_p") or 0 < s.top_p <= 1, f"{prefix}.top_p", "must be in (0, 1]")
    _check(not s.HasField("top_k") or s.top_k == -1 or s.top_k >= 1, f"{prefix}.top_k", "must be -1 (off) or >= 1")
    _check(not s.HasField("min_p") or 0 <= s.min_p <= 1, f"{prefix}.min_p", "must be in [0, 1]")
    _check(
        not s.HasField("repetition_penalty") or s.repetition_penalty > 0, f"{prefix}.repetition_penalty", "must be > 0"
    )
    for name in ("frequency_penalty", "presence_penalty"):
        _check(not s.HasField(name) or -2 <= getattr(s, name) <= 2, f"{prefix}.{name}", "must be in [-2, 2]")
    _check(not s.HasField("max_new_tokens") or s.max_new_tokens >= 1, f"{prefix}.max_new_tokens", "must be >= 1")
    _check(len(s.stop) <= MAX_STOP_STRINGS, f"{prefix}.stop", f"at most {MAX_STOP_STRINGS} stop strings")
    _check(all(s.stop), f"{prefix}.stop", "stop strings must not be empty")


def validate_common(n: int, top_logprobs: int, n_field: str = "n") -> int:
    """Returns the number of samples (0 means 1)."""
    _check(n <= MAX_SAMPLES, n_field, f"at most {MAX_SAMPLES} samples per request")
    _check(top_logprobs <= MAX_TOP_LOGPROBS, "top_logprobs", f"at most {MAX_TOP_LOGPROBS}")
    return max(1, n)


def validate_messages(messages: Sequence[common_pb2.ChatMessage]) -> None:
    _check(len(messages) > 0, "messages", "must not be empty")
    for i, m in enumerate(messages):
        _check(m.role in ROLES, f"messages[{i}].role", f"must be one of {', '.join(sorted(ROLES))}, got {m.role!r}")


def validate_input_ids(ids: Sequence[int], vocab_size: int, field: str) -> None:
    _check(len(ids) > 0, field, "must not be empty")
    bad = next((t for t in ids if t >= vocab_size), None)
    _check(bad is None, field, f"token id {bad} is outside the vocabulary (size {vocab_size})")


def max_new_tokens(s: common_pb2.SamplingParams, num_prompt_tokens: int, max_context: int) -> int:
    room = max_context - num_prompt_tokens
    _check(room > 0, "input", f"the prompt has {num_prompt_tokens} tokens; the context holds {max_context}")
    if not s.HasField("max_new_tokens"):
        return min(DEFAULT_MAX_NEW_TOKENS, room)
    _check(
        s.max_new_tokens <= room,
        "sampling.max_new_tokens",
        f"{s.max_new_tokens} new tokens after a {num_prompt_tokens}-token prompt exceed the context of {max_context}",
    )
    return s.max_new_tokens


def worker_sampling(
    s: common_pb2.SamplingParams, n: int, new_tokens: int, defaults: SamplingDefaults, stop_token_ids: Sequence[int]
) -> pb.SamplingParams:
    """Every field set explicitly: proto3 zeros are not SGLang's defaults."""
    out = pb.SamplingParams(
        temperature=s.temperature if s.HasField("temperature") else defaults.temperature,
        top_p=s.top_p if s.HasField("top_p") else defaults.top_p,
        top_k=s.top_k if s.HasField("top_k") else -1,
        min_p=s.min_p if s.HasField("min_p") else 0.0,
        repetition_penalty=s.repetition_penalty if s.HasField("repetition_penalty") else 1.0,
        frequency_penalty=s.frequency_penalty,
        presence_penalty=s.presence_penalty,
        max_new_tokens=new_tokens,
        stop=list(s.stop),
        stop_token_ids=sorted({*s.stop_token_ids, *stop_token_ids}),
        n=n,
        ignore_eos=s.ignore_eos,
        no_stop_trim=s.include_stop_str_in_output,
        skip_special_tokens=True,
    )
    if s.HasField("seed"):
        out.custom_params.CopyFrom(struct_pb2.Struct(fields={"seed": struct_pb2.Value(number_value=float(s.seed))}))
    return out


def worker_request(
    request_id: str,
    input_ids: Sequence[int],
    sampling: pb.SamplingParams,
    return_logprob: bool,
    top_logprobs: int,
    stream: bool,
) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        request_id=request_id,
        tokenized=pb.TokenizedInput(input_ids=input_ids),
        sampling_params=sampling,
        return_logprob=return_logprob,
        top_logprobs_num=top_logprobs if return_logprob else 0,
        logprob_start_len=-1,
        stream=stream,
    )
