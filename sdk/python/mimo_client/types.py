"""Typed results and inputs of the MiMo Serve SDK, and their conversion from the mimo.v1 protos."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mimo_client.v1 import admin_pb2, common_pb2, inference_pb2, rollout_pb2, tokenizer_pb2, verifier_pb2


def enum_str(enum_type: Any, value: int, prefix: str) -> str:
    """`FINISH_REASON_STOP` -> "stop"; an unknown number (a newer server) -> "unknown_<n>"."""
    try:
        return str(enum_type.Name(value)).removeprefix(prefix).lower()
    except ValueError:
        return f"unknown_{value}"


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Message:
    """One chat turn; `reasoning_content` is the text MiMo wrote inside <think>...</think> (assistant only)."""

    role: str
    content: str
    reasoning_content: str | None = None


@dataclass(frozen=True, slots=True)
class MathTask:
    """Check a math answer (the last \\boxed{}) against gold answers; any match is correct."""

    references: list[str]


@dataclass(frozen=True, slots=True)
class CodeTest:
    """One test: stdin/stdout, or a function call with JSON args when `args_json` is set."""

    stdin: str = ""
    expected_stdout: str = ""
    level: int = 1
    args_json: str | None = None
    expected_json: str | None = None


@dataclass(frozen=True, slots=True)
class CodeTask:
    """Run the response's code block against tests; `reward_mode` is "strict", "soft" or "pass_rate"."""

    tests: list[CodeTest]
    language: str = "python"
    reward_mode: str = "strict"
    level_weights: list[float] = field(default_factory=list)
    time_limit_s: float | None = None
    memory_limit_bytes: int | None = None
    float_tolerance: float | None = None
    entry_point: str = ""


@dataclass(frozen=True, slots=True)
class VerifyTask:
    """One item of a batch `verify`: a model response and how to check it."""

    response: str
    check: MathTask | CodeTask
    task_id: str = ""


@dataclass(frozen=True, slots=True)
class PartialSample:
    """A sample that came back aborted (`SampleFinished.partial()`), to continue in a later rollout."""

    sample_index: int
    token_ids: list[int]
    logprobs: list[float]  # one per token
    weight_version: str


@dataclass(frozen=True, slots=True)
class RolloutPrompt:
    """One rollout prompt: chat messages (dicts or `Message`) or token ids, and optionally how to reward it.
    `resume`: continue that partial sample (the prompt then makes exactly one sample)."""

    prompt_id: str
    messages: list[Message] | list[dict[str, str]] | None = None
    token_ids: list[int] | None = None
    reward: MathTask | CodeTask | None = None
    resume: PartialSample | None = None


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int  # includes reasoning tokens
    reasoning_tokens: int
    cached_tokens: int  # prompt tokens served from the prefix cache
    total_tokens: int


@dataclass(frozen=True, slots=True)
class TopLogprob:
    token_id: int
    logprob: float


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[TopLogprob]


@dataclass(frozen=True, slots=True)
class Choice:
    """One finished sample; `finish_reason` is "stop", "length", "abort" or "error"."""

    index: int
    text: str
    reasoning: str
    token_ids: list[int]
    finish_reason: str
    matched_stop: str | None
    logprobs: list[TokenLogprob]


@dataclass(frozen=True, slots=True)
class Completion:
    request_id: str
    model: str
    choices: list[Choice]
    usage: Usage

    @property
    def text(self) -> str:
        """The first choice's text."""
        return self.choices[0].text if self.choices else ""


@dataclass(frozen=True, slots=True)
class StreamDelta:
    """A piece of sample `index`; its last piece carries `finish_reason`, the stream's last carries `usage`."""

    request_id: str
    index: int
    text: str
    reasoning: str
    token_ids: list[int]
    finish_reason: str | None
    matched_stop: str | None
    logprobs: list[TokenLogprob]
    usage: Usage | None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    max_context_tokens: int
    vocab_size: int
    num_workers: int
    mtp_enabled: bool


@dataclass(frozen=True, slots=True)
class TokenizeResult:
    ids: list[int]
    offsets: list[tuple[int, int]]  # character spans; empty unless offsets were asked for


@dataclass(frozen=True, slots=True)
class ChatTemplateResult:
    text: str
    ids: list[int]


@dataclass(frozen=True, slots=True)
class TestOutcome:
    """One code test; `status` is "passed", "wrong_answer", "runtime_error", "time_limit", ..."""

    __test__ = False  # not a pytest class, whatever its name says
    index: int
    level: int
    status: str
    elapsed_s: float
    detail: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """A reward with its reason; `verdict` is "correct", "incorrect", "partial", "no_answer", "timeout", "error"."""

    reward: float
    verdict: str
    reason: str
    extracted_answer: str
    tests: list[TestOutcome]
    index: int = 0
    task_id: str = ""
    queue_s: float = 0.0
    elapsed_s: float = 0.0


@dataclass(frozen=True, slots=True)
class SampleFinished:
    rollout_id: str
    weight_version: str
    prompt_index: int
    prompt_id: str
    sample_index: int
    text: str
    token_ids: list[int]
    finish_reason: str
    reward: float
    verification: VerifyResult | None
    generation_s: float
    reward_wait_s: float  # from the sample's end to its reward
    usage: Usage
    prompt_token_ids: list[int] = field(default_factory=list)  # the prompt as the worker saw it
    logprobs: list[float] = field(default_factory=list)  # per token, of the sampling distribution
    sample_weight_version: str = ""  # the generating worker's version (weight_version echoes the request)
    num_resumed_tokens: int = 0  # a resumed sample: its first tokens came from the partial sample
    resumed_weight_version: str = ""  # ... made by this version

    def partial(self) -> PartialSample:
        """This sample's tokens so far, to resume it (`RolloutPrompt(..., resume=sample.partial())`)."""
        return PartialSample(self.sample_index, list(self.token_ids), list(self.logprobs), self.sample_weight_version)


@dataclass(frozen=True, slots=True)
class GroupFinished:
    rollout_id: str
    weight_version: str
    prompt_index: int
    prompt_id: str
    num_samples: int
    pass_rate: float
    mean_reward: float
    all_correct: bool
    all_wrong: bool
    zero_variance: bool = False  # no reward variance: dynamic sampling drops it
    scored: bool = True  # False: sampling only (no reward task, no scorer)
    num_aborted: int = 0  # samples cut short (a weight update's abort): partial tokens, unscored, not in the stats


@dataclass(frozen=True, slots=True)
class ProblemStat:
    """A dataset problem's pass-rate state after the rollout (the router keeps it across rollouts)."""

    prompt_id: str
    rollouts: int
    pass_rate: float
    last_pass_rate: float
    easy: bool


@dataclass(frozen=True, slots=True)
class RolloutFinished:
    rollout_id: str
    weight_version: str
    num_prompts_finished: int
    num_prompts_unfinished: int
    num_samples_finished: int
    num_samples_aborted: int
    wall_s: float
    samples_per_s: float
    completion_tokens_per_s: float
    reward_wait_s: float
    early_terminated: bool
    unfinished_prompt_ids: list[str]
    # dynamic sampling (target_valid_groups): the training batch, in launch order, and what else was generated
    selected_prompt_ids: list[str] = field(default_factory=list)
    num_groups_valid: int = 0
    num_groups_zero_variance: int = 0
    num_groups_surplus: int = 0
    num_prompts_launched: int = 0
    target_met: bool = False
    dataset_stats: list[ProblemStat] = field(default_factory=list)


RolloutEvent = SampleFinished | GroupFinished | RolloutFinished


# ---------------------------------------------------------------- from protos


def usage_from_pb(pb: common_pb2.Usage) -> Usage:
    return Usage(pb.prompt_tokens, pb.completion_tokens, pb.reasoning_tokens, pb.cached_tokens, pb.total_tokens)


def _finish(value: int) -> str:
    return enum_str(common_pb2.FinishReason, value, "FINISH_REASON_")


def _logprobs(items: Any) -> list[TokenLogprob]:
    return [TokenLogprob(lp.token_id, lp.logprob, [TopLogprob(t.token_id, t.logprob) for t in lp.top]) for lp in items]


def choice_from_pb(pb: inference_pb2.Choice) -> Choice:
    matched = pb.matched_stop if pb.HasField("matched_stop") else None
    return Choice(
        pb.index, pb.text, pb.reasoning, list(pb.token_ids), _finish(pb.finish_reason), matched, _logprobs(pb.logprobs)
    )


def completion_from_pb(pb: inference_pb2.GenerateResponse | inference_pb2.ChatResponse) -> Completion:
    return Completion(pb.request_id, pb.model, [choice_from_pb(c) for c in pb.choices], usage_from_pb(pb.usage))


def delta_from_pb(pb: inference_pb2.GenerateStreamResponse | inference_pb2.ChatStreamResponse) -> StreamDelta:
    d = pb.delta
    finish = _finish(d.finish_reason) if d.finish_reason else None
    matched = d.matched_stop if d.HasField("matched_stop") else None
    usage = usage_from_pb(pb.usage) if pb.HasField("usage") else None
    return StreamDelta(
        pb.request_id, d.index, d.text, d.reasoning, list(d.token_ids), finish, matched, _logprobs(d.logprobs), usage
    )


def models_from_pb(pb: inference_pb2.ListModelsResponse) -> list[ModelInfo]:
    return [ModelInfo(m.id, m.max_context_tokens, m.vocab_size, m.num_workers, m.mtp_enabled) for m in pb.models]


def encodings_from_pb(pb: tokenizer_pb2.TokenizeResponse) -> list[TokenizeResult]:
    return [TokenizeResult(list(e.ids), [(o.start, o.end) for o in e.offsets]) for e in pb.encodings]


def chat_template_from_pb(pb: tokenizer_pb2.ApplyChatTemplateResponse) -> ChatTemplateResult:
    return ChatTemplateResult(pb.text, list(pb.ids))


def verify_result_from_pb(pb: verifier_pb2.VerifyResult) -> VerifyResult:
    tests = [
        TestOutcome(
            t.index, t.level, enum_str(verifier_pb2.TestStatus, t.status, "TEST_STATUS_"), t.elapsed_s, t.detail
        )
        for t in pb.tests
    ]
    verdict = enum_str(verifier_pb2.Verdict, pb.verdict, "VERDICT_")
    return VerifyResult(
        pb.reward, verdict, pb.reason, pb.extracted_answer, tests, pb.index, pb.task_id, pb.queue_s, pb.elapsed_s
    )


def rollout_event_from_pb(pb: rollout_pb2.RolloutEvent) -> RolloutEvent | None:
    """The typed event, or None for an event kind this SDK does not know (a newer server)."""
    ids = (pb.rollout_id, pb.weight_version)
    kind = pb.WhichOneof("event")
    if kind == "sample":
        s = pb.sample
        verification = verify_result_from_pb(s.verification) if s.HasField("verification") else None
        return SampleFinished(
            *ids, s.prompt_index, s.prompt_id, s.sample_index, s.text, list(s.token_ids), _finish(s.finish_reason),
            s.reward, verification, s.generation_s, s.reward_wait_s, usage_from_pb(s.usage),
            list(s.prompt_token_ids), list(s.logprobs), s.weight_version, s.num_resumed_tokens,
            s.resumed_weight_version,
        )  # fmt: skip
    if kind == "group":
        g = pb.group
        return GroupFinished(
            *ids, g.prompt_index, g.prompt_id, g.num_samples, g.pass_rate, g.mean_reward, g.all_correct, g.all_wrong,
            g.zero_variance, g.scored, g.num_aborted,
        )  # fmt: skip
    if kind == "finished":
        f = pb.finished
        return RolloutFinished(
            *ids, f.num_prompts_finished, f.num_prompts_unfinished, f.num_samples_finished, f.num_samples_aborted,
            f.wall_s, f.samples_per_s, f.completion_tokens_per_s, f.reward_wait_s, f.early_terminated,
            list(f.unfinished_prompt_ids), list(f.selected_prompt_ids), f.num_groups_valid,
            f.num_groups_zero_variance, f.num_groups_surplus, f.num_prompts_launched, f.target_met,
            [ProblemStat(s.prompt_id, s.rollouts, s.pass_rate, s.last_pass_rate, s.easy) for s in f.dataset_stats],
        )  # fmt: skip
    return None


# -- admin (fleet weight updates)


@dataclass(frozen=True, slots=True)
class WorkerUpdate:
    worker: str
    ok: bool
    weight_version: str  # what the worker reports now
    load_s: float
    error: str  # why it failed; the router keeps it out of routing
    num_aborted: int


@dataclass(frozen=True, slots=True)
class WeightUpdate:
    """`update_weights()`'s result: `failed` lists the workers left out of routing."""

    weight_version: str
    workers: list[WorkerUpdate]
    wall_s: float  # the call to every updated worker serving the new version
    num_rollouts_waited: int

    @property
    def failed(self) -> list[WorkerUpdate]:
        return [w for w in self.workers if not w.ok]


@dataclass(frozen=True, slots=True)
class WorkerVersion:
    worker: str
    weight_version: str
    state: str
    routable: bool
    reason: str  # why it gets no traffic, when it does not


@dataclass(frozen=True, slots=True)
class WeightVersions:
    weight_version: str  # the fleet's ("" before the first update)
    model_path: str
    is_updating: bool
    workers: list[WorkerVersion]


def weight_update_from_pb(pb: admin_pb2.FleetUpdateResponse) -> WeightUpdate:
    workers = [WorkerUpdate(w.worker, w.ok, w.weight_version, w.load_s, w.error, w.num_aborted) for w in pb.workers]
    return WeightUpdate(pb.weight_version, workers, pb.wall_s, pb.num_rollouts_waited)


def weight_versions_from_pb(pb: admin_pb2.FleetVersions) -> WeightVersions:
    workers = [WorkerVersion(w.worker, w.weight_version, w.state, w.routable, w.reason) for w in pb.workers]
    return WeightVersions(pb.weight_version, pb.model_path, pb.is_updating, workers)
