"""The router's domain types: requests as the pipeline sees them, what comes back, and errors with reasons.

No protobuf and no grpc here: `wire.py` (public API) and the peer clients (`worker_client.py`, `tokenization.py`,
`rewards.py`) translate at the edges, so a second front end (HTTP) drives the same pipeline.
"""

from __future__ import annotations

import enum
import time
import uuid
from dataclasses import dataclass, field

# --- errors ---------------------------------------------------------------------------------------------------


class RouterError(Exception):
    """Base of every error the router reports to a caller; front ends map the subclass to a status."""


class InvalidRequest(RouterError, ValueError):
    """Bad input; `field` names the request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class UnknownModel(RouterError):
    """The request names a model this router does not serve."""

    def __init__(self, model: str, served: str) -> None:
        super().__init__(f"model: unknown model {model!r}; this router serves {served!r}")
        self.model = model


class Rejected(RouterError):
    """Admission refused; `retry_after_s` is advice for the client."""

    def __init__(self, reason: str, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s


class Unavailable(RouterError):
    """No worker could serve the request (none routable, all tried failed, or one failed mid-stream)."""


class DeadlineExceeded(RouterError):
    """The caller's deadline ran out while the router waited on a worker."""


class Unauthenticated(RouterError):
    """No valid credentials."""


class Conflict(RouterError):
    """Another operation holds what the call needs (a weight update is already running)."""


class FailedPrecondition(RouterError):
    """The system is not in the state the call needs (the fleet serves an older weight version)."""


# --- requests -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SamplingDefaults:
    """Chat and completions use MiMo's evaluation setting; rollouts use its RL setting (1.0, 1.0)."""

    temperature: float = 0.6
    top_p: float = 0.95


CHAT_DEFAULTS = SamplingDefaults()
RL_DEFAULTS = SamplingDefaults(temperature=1.0, top_p=1.0)


@dataclass(frozen=True, slots=True)
class Sampling:
    """What the caller asked for; None means "the default" (which depends on the kind of request)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    max_new_tokens: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    json_schema: str | None = None  # structured outputs, passed to the worker as SGLang's constraint fields
    regex: str | None = None
    ebnf: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str
    reasoning_content: str | None = None


@dataclass(frozen=True, slots=True)
class Prompt:
    """Exactly one of text, token ids or chat messages."""

    text: str | None = None
    token_ids: tuple[int, ...] | None = None
    messages: tuple[Message, ...] | None = None


def new_request_id() -> str:
    return f"mimo-{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationRequest:
    """One validated generation request, whatever front end it came from."""

    method: str  # the public method, for metrics ("Chat", "ChatStream", "http.chat", "Rollout", …)
    prompt: Prompt
    sampling: Sampling = Sampling()
    n: int = 1
    return_logprobs: bool = False
    top_logprobs: int = 0
    priority: int = 0
    split_reasoning: bool = False
    stream: bool = False
    request_id: str = field(default_factory=new_request_id)
    group_key: str | None = None  # samples of one rollout prompt share it (cache-aware placement)
    defaults: SamplingDefaults = CHAT_DEFAULTS
    deadline: float | None = None  # time.monotonic() seconds
    arrived: float = field(default_factory=time.monotonic)


# --- results --------------------------------------------------------------------------------------------------


class FinishReason(enum.Enum):
    UNSPECIFIED = "unspecified"
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token id, logprob) alternatives


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of one sample; the last piece of a sample carries its finish reason."""

    index: int
    text: str = ""
    reasoning: str = ""
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: FinishReason = FinishReason.UNSPECIFIED
    matched_stop: str | None = None


@dataclass(frozen=True, slots=True)
class Choice:
    index: int
    text: str
    reasoning: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    matched_stop: str | None
    logprobs: tuple[TokenLogprob, ...]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# --- what workers send back (translated from SGLang's protocol by worker_client.py) -----------------------------


@dataclass(frozen=True, slots=True)
class TokenChunk:
    """New tokens of one sample (streamed requests)."""

    index: int
    token_ids: tuple[int, ...]
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class SampleComplete:
    """A sample's last message: all its output ids (for non-streamed requests) and why it ended."""

    index: int
    output_ids: tuple[int, ...]
    logprobs: tuple[TokenLogprob, ...] | None
    finish_reason: str  # SGLang's text: "stop", "length", "abort" (sometimes JSON)
    matched_stop_str: str | None = None
    cached_tokens: int = 0
    weight_version: str = ""  # the worker's, for the whole request (its Generate metadata)


WorkerEvent = TokenChunk | SampleComplete


@dataclass(frozen=True, slots=True)
class WorkerRequest:
    """A generation as a worker receives it: every sampling field resolved (proto3 zeros are not SGLang's
    defaults)."""

    request_id: str
    input_ids: tuple[int, ...]
    sampling: Sampling  # with every default filled in (see pipeline.resolve_sampling)
    n: int
    max_new_tokens: int
    return_logprobs: bool
    top_logprobs: int
    stream: bool


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """The worker's own view of its load, from GetLoads."""

    num_running: int = 0
    num_waiting: int = 0
    token_usage: float = 0.0
    cache_hit_rate: float = 0.0
    accept_length: float = 0.0
    max_running: int = 0


@dataclass(frozen=True, slots=True)
class WorkerModelInfo:
    model_path: str = ""
    max_context_length: int = 0
    vocab_size: int = 0
    weight_version: str = ""


class WorkerCallFailed(Exception):
    """A call to a worker failed. `transport` failures count against the worker's breaker; `retryable` ones may
    move to another worker before the first response."""

    def __init__(
        self, code: str, detail: str, *, transport: bool, retryable: bool, deadline: bool = False, invalid: bool = False
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.code, self.detail = code, detail
        self.transport, self.retryable, self.deadline, self.invalid = transport, retryable, deadline, invalid


# --- rollouts -------------------------------------------------------------------------------------------------


class Verdict(enum.Enum):
    UNSPECIFIED = 0
    CORRECT = 1
    INCORRECT = 2
    PARTIAL = 3
    NO_ANSWER = 4
    TIMEOUT = 5
    ERROR = 6  # the verifier itself failed: never a silent 0


@dataclass(frozen=True, slots=True)
class RewardTask:
    """A verifier task ("math" or "code") carried to the verifier as the caller wrote it (serialized)."""

    kind: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class RewardRequest:
    task_id: str
    response: str
    task: RewardTask | None  # None: an open reward (the scorer gets the response with neither math nor code)


@dataclass(frozen=True, slots=True)
class Reward:
    reward: float
    verdict: Verdict
    reason: str = ""
    payload: bytes = b""  # the verifier's whole result (serialized), returned to the caller as is

    @property
    def is_error(self) -> bool:
        return self.verdict is Verdict.ERROR


class RolloutMode(enum.Enum):
    SEAMLESS = "seamless"
    SYNCHRONOUS = "synchronous"


class RewardTiming(enum.Enum):
    PER_SAMPLE = "per_sample"  # async rewards: scored as each sample ends, its slot freed at once
    PER_GROUP = "per_group"  # scored when the whole group has ended; its slots held until then


@dataclass(frozen=True, slots=True)
class DynamicSampling:
    """Dynamic sampling (services/router/sampling_policy.py): `target_valid_groups` groups with reward variance."""

    target_valid_groups: int
    oversampling: float = 1.0
    max_prompts_launched: int = 0  # 0: the whole source
    launch_order_termination: bool = False


@dataclass(frozen=True, slots=True)
class ProblemStat:
    prompt_id: str
    rollouts: int
    pass_rate: float
    last_pass_rate: float
    easy: bool


@dataclass(frozen=True, slots=True)
class BatchReport:
    """What dynamic sampling selected and what else it generated."""

    selected_prompt_ids: tuple[str, ...] = ()
    num_groups_valid: int = 0
    num_groups_zero_variance: int = 0
    num_groups_surplus: int = 0
    num_prompts_launched: int = 0
    completion_tokens: int = 0
    selected_completion_tokens: int = 0
    target_met: bool = False
    dataset_stats: tuple[ProblemStat, ...] = ()


@dataclass(frozen=True, slots=True)
class PartialSample:
    """A sample that came back aborted, to be continued (RolloutPrompt.resume)."""

    sample_index: int
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]  # one per token, or none (then the resumed sample reports no logprobs)
    weight_version: str


@dataclass(frozen=True, slots=True)
class RolloutPrompt:
    index: int
    prompt_id: str
    prompt: Prompt
    reward: RewardTask | None
    resume: PartialSample | None = None  # then the prompt makes one sample, continuing these tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutSpec:
    rollout_id: str
    prompts: tuple[RolloutPrompt, ...]
    samples_per_prompt: int
    sampling: Sampling
    weight_version: str = ""
    max_samples_in_flight: int = 0  # 0: the router's limit
    target_prompts: int | None = None  # FIFO early termination when set
    mode: RolloutMode = RolloutMode.SEAMLESS
    sync_batch_prompts: int = 0
    deadline: float | None = None
    dynamic: DynamicSampling | None = None
    dataset: str = ""  # prompts drawn from a registered dataset (services/router/datasets.py)
    scorer: str = ""  # host:port of an external mimo.v1.Verifier (empty: the router's)
    reward_timing: RewardTiming = RewardTiming.PER_SAMPLE
    min_weight_version: str = ""  # refuse unless the fleet serves at least this (fleet.py)
    partial_rollout: bool = False  # early termination returns running samples aborted, resumable, not dropped


@dataclass(frozen=True, slots=True)
class SampleFinished:
    prompt_index: int
    prompt_id: str
    sample_index: int
    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    reward: Reward
    generation_s: float
    reward_wait_s: float
    usage: Usage
    prompt_token_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()  # per response token, of the distribution it was sampled from
    weight_version: str = ""  # the worker's when it generated the sample
    num_resumed_tokens: int = 0  # a resumed sample: its first tokens came from the partial sample
    resumed_weight_version: str = ""


@dataclass(frozen=True, slots=True)
class GroupFinished:
    prompt_index: int
    prompt_id: str
    num_samples: int
    pass_rate: float
    mean_reward: float
    all_correct: bool
    all_wrong: bool
    num_reward_errors: int = 0
    zero_variance: bool = False  # no reward variance: dynamic sampling drops it
    scored: bool = True  # False: sampling only
    num_aborted: int = 0  # ended aborted (partial tokens), not scored, left out of the statistics


@dataclass(frozen=True, slots=True)
class RolloutFinished:
    num_prompts_finished: int
    num_prompts_unfinished: int
    num_samples_finished: int
    num_samples_aborted: int
    wall_s: float
    samples_per_s: float
    completion_tokens_per_s: float
    reward_wait_s: float
    early_terminated: bool
    unfinished_prompt_ids: tuple[str, ...]
    num_reward_errors: int = 0
    batch: BatchReport = BatchReport()


RolloutEvent = SampleFinished | GroupFinished | RolloutFinished
