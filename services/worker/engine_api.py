"""The engine interface every worker engine implements (torch, sim, sglang proxy), and its boundary types.

The gRPC servicer (`services/worker/server.py`) turns SGLang's scheduler protocol into these frozen
dataclasses and back; engines never see protobuf or a grpc context.

Contract of `Engine.generate` (implementations write `async def generate(self, req): ... yield chunk`):
- it raises `InvalidRequest` (bad input, names the field) or `EngineFull` (queue full) before the first chunk;
- it yields `OutputChunk`s with the new token ids of one sample (`index` for n > 1), cumulative counts,
  and exactly one chunk with `finished=True` per sample index, the last one for that index;
- closing or cancelling the iterator before the end aborts the request in the engine (frees its KV);
- `Engine.abort(request_id)` ends a running request: its stream gets a final chunk with finish "abort".
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length", "abort"]

MAX_SAMPLES_PER_REQUEST = 1024  # more can never be admitted: refuse (INVALID_ARGUMENT), don't invite a retry
GREEDY_TEMPERATURE = 1e-5  # SGLang's threshold: at or below it, sampling is greedy


class EngineError(Exception):
    """Base of the errors an engine raises to the servicer."""


class InvalidRequest(EngineError):
    """Bad input; `field` is the request field at fault, as a proto path (e.g. `sampling_params.top_p`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class EngineFull(EngineError):
    """Admission refused: the waiting queue is full. The client should retry later or elsewhere."""


class EngineUnavailable(EngineError):
    """The engine cannot serve now (not started, child process down, draining)."""


class WeightsRejected(EngineError):
    """A weight update refused (unreadable or mismatched checkpoint); the old weights keep serving."""


@dataclass(frozen=True, slots=True)
class SamplingConfig:
    """SGLang's sampling parameters with SGLang's own defaults (not proto3 zeros)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1: off
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    max_new_tokens: int | None = None  # None: up to the context length (SGLang's behaviour)
    min_new_tokens: int = 0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    n: int = 1
    seed: int | None = None  # per-request seed; None: the engine's own randomness
    constraint: tuple[str, str] | None = None  # structured output: ("json_schema" | "regex" | "ebnf", its text)

    @property
    def is_greedy(self) -> bool:
        return self.temperature <= GREEDY_TEMPERATURE or self.top_k == 1


@dataclass(frozen=True, slots=True)
class GenerateInput:
    """One generation request: token ids in, sampling settings, what to return."""

    request_id: str
    input_ids: tuple[int, ...]
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    return_logprob: bool = False
    top_logprobs_num: int = 0
    stream: bool = True


@dataclass(frozen=True, slots=True)
class OutputChunk:
    """New tokens of one sample; counts are cumulative for that sample. The last chunk has `finished=True`."""

    index: int
    token_ids: tuple[int, ...]
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    logprobs: tuple[float, ...] = ()  # one per new token when return_logprob
    top_logprobs: tuple[tuple[tuple[int, float], ...], ...] = ()  # per new token: (token id, logprob) pairs
    finished: bool = False
    finish_reason: FinishReason | None = None
    matched_token_id: int | None = None
    matched_stop_str: str | None = None
    output_ids: tuple[int, ...] = ()  # all output ids of the sample, on the last chunk
    spec_accepted_tokens: int = 0  # on the last chunk: draft tokens the target accepted
    spec_draft_tokens: int = 0  # on the last chunk: draft tokens proposed


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """A snapshot of the engine's scheduler state, as GetLoads and the metrics report it."""

    running_requests: int = 0
    waiting_requests: int = 0
    used_kv_tokens: int = 0
    max_kv_tokens: int = 0
    cache_hit_rate: float = 0.0  # cached prompt tokens / prompt tokens, since start
    gen_throughput_tps: float = 0.0  # generated tokens per second, recent
    waiting_uncached_tokens: int = 0
    max_running_requests: int = 0
    spec_accept_length: float | None = None  # mean tokens per decode step per request; None without MTP
    spec_accept_rate: float | None = None  # accepted / proposed draft tokens; None without MTP

    @property
    def token_usage(self) -> float:
        return self.used_kv_tokens / self.max_kv_tokens if self.max_kv_tokens else 0.0


@dataclass(frozen=True, slots=True)
class EngineModelInfo:
    """What GetModelInfo reports. Paths are absolute (SMG loads the tokenizer from them)."""

    model_path: str
    tokenizer_path: str
    served_model_name: str
    max_context_length: int
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int = 0
    bos_token_id: int = 0
    architectures: tuple[str, ...] = ()
    model_type: str = ""
    weight_version: str = ""
    engine: str = ""  # "sim", "torch", "sglang"
    engine_version: str = ""


@dataclass(frozen=True, slots=True)
class Health:
    is_healthy: bool
    message: str = ""


@runtime_checkable
class Engine(Protocol):
    """What the SglangScheduler servicer needs from an engine."""

    async def start(self) -> None:
        """Load and start scheduling; called once inside the event loop before serving."""

    async def stop(self) -> None:
        """Abort what is left and release resources."""

    def model_info(self) -> EngineModelInfo: ...

    def validate(self, req: GenerateInput) -> None:
        """Raise InvalidRequest for input this engine cannot serve (no ids, ids outside vocab, too long)."""

    def generate(self, req: GenerateInput) -> AsyncGenerator[OutputChunk, None]:
        """Stream the request's output chunks (see the module docstring for the contract)."""
        ...

    async def abort(self, request_id: str) -> bool:
        """End a running or waiting request; False if unknown."""
        ...

    def load(self) -> EngineLoad: ...

    async def flush_cache(self) -> bool:
        """Drop the prefix cache; False (and nothing dropped) while requests are running."""
        ...

    async def health(self) -> Health: ...

    async def update_weights(self, model_path: str, weight_version: str) -> None:
        """Install the checkpoint at `model_path` in place and report `weight_version` from then on.

        Called by the worker control with no request in flight. Raises WeightsRejected (old weights kept)."""
        ...

    def server_args(self) -> Mapping[str, str | int | float | bool]:
        """The engine's settings, reported by GetServerInfo."""
        ...


def validate_common(req: GenerateInput, info: EngineModelInfo) -> None:
    """Checks every engine shares: input ids, vocabulary, context length, sampling ranges."""
    if not req.input_ids:
        raise InvalidRequest("tokenized.input_ids", "no input ids (the worker takes token ids only)")
    bad = next((t for t in req.input_ids if not 0 <= t < info.vocab_size), None)
    if bad is not None:
        raise InvalidRequest("tokenized.input_ids", f"token id {bad} is outside the vocabulary [0, {info.vocab_size})")
    if len(req.input_ids) >= info.max_context_length:
        raise InvalidRequest(
            "tokenized.input_ids",
            f"{len(req.input_ids)} input tokens leave no room in the context of {info.max_context_length}",
        )
    _validate_sampling(req.sampling, len(req.input_ids), info)
    if req.top_logprobs_num < 0:
        raise InvalidRequest("top_logprobs_num", "must be >= 0")


def _validate_sampling(s: SamplingConfig, num_input: int, info: EngineModelInfo) -> None:
    if s.max_new_tokens is not None:
        if s.max_new_tokens < 0:
            raise InvalidRequest("sampling_params.max_new_tokens", "must be >= 0")
        if num_input + s.max_new_tokens > info.max_context_length:
            raise InvalidRequest(
                "sampling_params.max_new_tokens",
                f"{num_input} input + {s.max_new_tokens} new tokens exceed the context length {info.max_context_length}",
            )
    checks = (
        (s.temperature >= 0, "sampling_params.temperature", "must be >= 0"),
        (0 < s.top_p <= 1, "sampling_params.top_p", "must be in (0, 1]"),
        (s.top_k == -1 or s.top_k >= 1, "sampling_params.top_k", "must be -1 (off) or >= 1"),
        (0 <= s.min_p <= 1, "sampling_params.min_p", "must be in [0, 1]"),
        (s.repetition_penalty > 0, "sampling_params.repetition_penalty", "must be > 0"),
        (-2 <= s.frequency_penalty <= 2, "sampling_params.frequency_penalty", "must be in [-2, 2]"),
        (-2 <= s.presence_penalty <= 2, "sampling_params.presence_penalty", "must be in [-2, 2]"),
        (1 <= s.n <= MAX_SAMPLES_PER_REQUEST, "sampling_params.n", f"must be in [1, {MAX_SAMPLES_PER_REQUEST}]"),
        (s.min_new_tokens >= 0, "sampling_params.min_new_tokens", "must be >= 0"),
    )
    for ok, name, message in checks:
        if not ok:
            raise InvalidRequest(name, message)
    bad_stop = next((t for t in s.stop_token_ids if not 0 <= t < info.vocab_size), None)
    if bad_stop is not None:
        raise InvalidRequest("sampling_params.stop_token_ids", f"token id {bad_stop} is outside the vocabulary")


def resolve_max_new_tokens(s: SamplingConfig, num_input: int, max_context_length: int) -> int:
    """SGLang's rule: an unset max_new_tokens runs to the end of the context."""
    room = max_context_length - num_input
    return room if s.max_new_tokens is None else min(s.max_new_tokens, room)
