"""The public gRPC API's edge: protos → frozen domain requests (every input check that needs no worker lives
here, so every front end refuses the same things), and domain results → protos."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence

from mimo_client.v1 import common_pb2, inference_pb2, rollout_pb2, verifier_pb2

from services.router import domain as d

MAX_SAMPLES = 64
MAX_TOP_LOGPROBS = 20
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256
MAX_REQUEST_ID_CHARS = 256
MAX_PROMPT_CHARS = 1_000_000  # well past a 32K-token context; checked before any tokenization
MAX_MESSAGES = 4096
MAX_CONSTRAINT_CHARS = 100_000
MAX_ROLLOUT_PROMPTS = 100_000
MAX_VERSION_CHARS = 256
MAX_RESUME_TOKENS = 32768
ROLES = {"system", "user", "assistant", "tool"}


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise d.InvalidRequest(field, message)


# --- checks on domain values (shared by every front end) ------------------------------------------------------
def check_sampling(s: d.Sampling, prefix: str = "sampling") -> None:
    for name in ("temperature", "top_p", "min_p", "repetition_penalty", "frequency_penalty", "presence_penalty"):
        value = getattr(s, name)
        _check(value is None or math.isfinite(value), f"{prefix}.{name}", "must be a finite number")
    _check(s.temperature is None or s.temperature >= 0, f"{prefix}.temperature", "must be >= 0")
    _check(s.top_p is None or 0 < s.top_p <= 1, f"{prefix}.top_p", "must be in (0, 1]")
    _check(s.top_k is None or s.top_k == -1 or s.top_k >= 1, f"{prefix}.top_k", "must be -1 (off) or >= 1")
    _check(s.min_p is None or 0 <= s.min_p <= 1, f"{prefix}.min_p", "must be in [0, 1]")
    _check(s.repetition_penalty is None or s.repetition_penalty > 0, f"{prefix}.repetition_penalty", "must be > 0")
    for name in ("frequency_penalty", "presence_penalty"):
        _check(-2 <= getattr(s, name) <= 2, f"{prefix}.{name}", "must be in [-2, 2]")
    _check(s.max_new_tokens is None or s.max_new_tokens >= 1, f"{prefix}.max_new_tokens", "must be >= 1")
    _check(len(s.stop) <= MAX_STOP_STRINGS, f"{prefix}.stop", f"at most {MAX_STOP_STRINGS} stop strings")
    _check(all(s.stop), f"{prefix}.stop", "stop strings must not be empty")
    _check(
        all(len(x) <= MAX_STOP_CHARS and "\0" not in x for x in s.stop),
        f"{prefix}.stop",
        f"stop strings hold at most {MAX_STOP_CHARS} characters and no NUL",
    )
    constraints = [x for x in (s.json_schema, s.regex, s.ebnf) if x is not None]
    _check(len(constraints) <= 1, f"{prefix}.constraint", "set at most one of json_schema, regex, ebnf")
    _check(all(len(x) <= MAX_CONSTRAINT_CHARS for x in constraints), f"{prefix}.constraint", "too long")
    _check(s.json_schema is None or _is_json_object(s.json_schema), f"{prefix}.json_schema", "must be a JSON object")
    _check(s.regex != "" and s.ebnf != "", f"{prefix}.constraint", "regex and ebnf must not be empty")


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def check_samples(n: int, top_logprobs: int, n_field: str = "n") -> int:
    """Returns the number of samples (0 means 1)."""
    _check(n <= MAX_SAMPLES, n_field, f"at most {MAX_SAMPLES} samples per request")
    _check(top_logprobs <= MAX_TOP_LOGPROBS, "top_logprobs", f"at most {MAX_TOP_LOGPROBS}")
    return max(1, n)


def check_messages(messages: Sequence[d.Message], field: str = "messages") -> None:
    _check(len(messages) > 0, field, "must not be empty")
    _check(len(messages) <= MAX_MESSAGES, field, f"at most {MAX_MESSAGES} messages")
    for i, m in enumerate(messages):
        _check(m.role in ROLES, f"{field}[{i}].role", f"must be one of {', '.join(sorted(ROLES))}, got {m.role!r}")
    size = sum(len(m.content) + len(m.reasoning_content or "") for m in messages)
    _check(size <= MAX_PROMPT_CHARS, field, f"{size} characters in all; at most {MAX_PROMPT_CHARS}")


def check_text(text: str, field: str = "text") -> None:
    _check(bool(text), field, "must not be empty")
    _check(len(text) <= MAX_PROMPT_CHARS, field, f"{len(text)} characters; at most {MAX_PROMPT_CHARS}")


def check_request_id(request_id: str, field: str = "request_id") -> None:
    _check(len(request_id) <= MAX_REQUEST_ID_CHARS, field, f"at most {MAX_REQUEST_ID_CHARS} characters")
    _check(request_id.isprintable(), field, "must be printable text")


# --- protos → domain ------------------------------------------------------------------------------------------
def sampling_of(s: common_pb2.SamplingParams, prefix: str = "sampling") -> d.Sampling:
    def opt(name: str):  # type: ignore[no-untyped-def]
        return getattr(s, name) if s.HasField(name) else None

    sampling = d.Sampling(
        temperature=opt("temperature"),
        top_p=opt("top_p"),
        top_k=opt("top_k"),
        min_p=opt("min_p"),
        repetition_penalty=opt("repetition_penalty"),
        frequency_penalty=s.frequency_penalty,
        presence_penalty=s.presence_penalty,
        max_new_tokens=opt("max_new_tokens"),
        stop=tuple(s.stop),
        stop_token_ids=tuple(s.stop_token_ids),
        seed=opt("seed"),
        ignore_eos=s.ignore_eos,
        include_stop_str_in_output=s.include_stop_str_in_output,
        skip_special_tokens=s.skip_special_tokens if s.HasField("skip_special_tokens") else True,
        json_schema=opt("json_schema"),
        regex=opt("regex"),
        ebnf=opt("ebnf"),
    )
    check_sampling(sampling, prefix)
    return sampling


def messages_of(messages: Sequence[common_pb2.ChatMessage], field: str = "messages") -> tuple[d.Message, ...]:
    out = tuple(
        d.Message(m.role, m.content, m.reasoning_content if m.HasField("reasoning_content") else None) for m in messages
    )
    check_messages(out, field)
    return out


def deadline_in(time_remaining_s: float | None) -> float | None:
    return None if time_remaining_s is None else time.monotonic() + time_remaining_s


def _generation(request, prompt: d.Prompt, method: str, stream: bool, split: bool, deadline: float | None):  # type: ignore[no-untyped-def]
    sampling = sampling_of(request.sampling)
    check_request_id(request.request_id)
    extra = {"request_id": request.request_id} if request.request_id else {}
    return d.GenerationRequest(
        method=method,
        prompt=prompt,
        sampling=sampling,
        n=check_samples(request.n, request.top_logprobs),
        return_logprobs=request.return_logprobs,
        top_logprobs=request.top_logprobs,
        priority=request.priority,
        split_reasoning=split,
        stream=stream,
        deadline=deadline,
        **extra,
    )


def generate_request(
    request: inference_pb2.GenerateRequest, method: str, stream: bool, deadline: float | None
) -> d.GenerationRequest:
    kind = request.WhichOneof("input")
    _check(kind is not None, "input", "set text or token_ids")
    if kind == "text":
        check_text(request.text)
        prompt = d.Prompt(text=request.text)
    else:
        prompt = d.Prompt(token_ids=tuple(request.token_ids.ids))
    return _generation(request, prompt, method, stream, request.split_reasoning, deadline)


def chat_request(
    request: inference_pb2.ChatRequest, method: str, stream: bool, deadline: float | None
) -> d.GenerationRequest:
    prompt = d.Prompt(messages=messages_of(request.messages))
    return _generation(request, prompt, method, stream, True, deadline)


def reward_task(p: rollout_pb2.RolloutPrompt, field: str) -> d.RewardTask | None:
    kind = p.WhichOneof("reward")
    if kind is None:
        return None
    if kind == "math":
        _check(len(p.math.references) > 0, f"{field}.math.references", "give at least one reference answer")
        return d.RewardTask("math", p.math.SerializeToString())
    code = p.code
    _check(code.language.lower() in ("", "python", "cpp"), f"{field}.code.language", "must be python or cpp")
    _check(0 < len(code.tests) <= 1000, f"{field}.code.tests", "give 1 to 1000 tests")
    return d.RewardTask("code", code.SerializeToString())


def rollout_prompt(p: rollout_pb2.RolloutPrompt, i: int, vocab_size: int, field: str) -> d.RolloutPrompt:
    kind = p.WhichOneof("input")
    _check(kind is not None, f"{field}.input", "set messages or token_ids")
    if kind == "messages":
        prompt = d.Prompt(messages=messages_of(p.messages.messages, f"{field}.messages"))
    else:
        ids = tuple(p.token_ids.ids)
        _check(len(ids) > 0, f"{field}.token_ids", "must not be empty")
        bad = next((t for t in ids if t >= vocab_size), None)
        _check(bad is None, f"{field}.token_ids", f"token id {bad} is outside the vocabulary (size {vocab_size})")
        prompt = d.Prompt(token_ids=ids)
    # no reward task: sampling only, or scored by the rollout's external scorer (services/router/scorers.py)
    return d.RolloutPrompt(i, p.prompt_id, prompt, reward_task(p, field), partial_sample(p, vocab_size, field))


def partial_sample(p: rollout_pb2.RolloutPrompt, vocab_size: int, field: str) -> d.PartialSample | None:
    if not p.HasField("resume"):
        return None
    r, field = p.resume, f"{field}.resume"
    ids = tuple(r.token_ids)
    _check(0 < len(ids) <= MAX_RESUME_TOKENS, f"{field}.token_ids", f"give 1..{MAX_RESUME_TOKENS} tokens")
    bad = next((t for t in ids if t >= vocab_size), None)
    _check(bad is None, f"{field}.token_ids", f"token id {bad} is outside the vocabulary (size {vocab_size})")
    _check(len(r.logprobs) in (0, len(ids)), f"{field}.logprobs", f"give none or one per token ({len(ids)})")
    _check(all(math.isfinite(x) and x <= 0 for x in r.logprobs), f"{field}.logprobs", "must be finite and <= 0")
    _check(len(r.weight_version) <= MAX_VERSION_CHARS, f"{field}.weight_version", "too long")
    return d.PartialSample(r.sample_index, ids, tuple(r.logprobs), r.weight_version)


def dataset_prompts(path: str, vocab_size: int) -> tuple[d.RolloutPrompt, ...]:
    """A dataset file: one RolloutPrompt per line in protobuf JSON (prompt_id, messages or token_ids, math or
    code). Errors name the line."""
    from google.protobuf import json_format

    out: list[d.RolloutPrompt] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                pb = json_format.Parse(line, rollout_pb2.RolloutPrompt())
            except json_format.ParseError as e:
                raise d.InvalidRequest(f"{path}:{n}", str(e)) from e
            out.append(rollout_prompt(pb, len(out), vocab_size, f"{path}:{n}"))
    return tuple(out)


def dynamic_sampling(request: rollout_pb2.RolloutRequest, launch_order: bool) -> d.DynamicSampling | None:
    if request.target_valid_groups == 0:
        _check(not launch_order, "target_valid_groups", "LAUNCH_ORDER early termination needs target_valid_groups")
        _check(not request.dataset, "target_valid_groups", "a dataset rollout needs target_valid_groups")
        return None
    oversampling = request.oversampling or 1.0
    _check(math.isfinite(oversampling) and 1.0 <= oversampling <= 4.0, "oversampling", "must be in [1, 4]")
    cap = request.max_prompts_launched
    _check(cap == 0 or cap >= request.target_valid_groups, "max_prompts_launched", "must be >= target_valid_groups")
    if not request.dataset:
        _check(
            request.target_valid_groups <= len(request.prompts),
            "target_valid_groups",
            f"at most the {len(request.prompts)} prompts given",
        )
    return d.DynamicSampling(request.target_valid_groups, oversampling, cap, launch_order)


def rollout_spec(request: rollout_pb2.RolloutRequest, vocab_size: int, deadline: float | None) -> d.RolloutSpec:
    """Every check that needs no worker, before anything starts."""
    if request.dataset:
        _check(len(request.prompts) == 0, "prompts", "set prompts or dataset, not both")
    else:
        _check(len(request.prompts) > 0, "prompts", "must not be empty (or name a dataset)")
    _check(len(request.prompts) <= MAX_ROLLOUT_PROMPTS, "prompts", f"at most {MAX_ROLLOUT_PROMPTS} prompts")
    _check(request.mode in rollout_pb2.RolloutMode.values(), "mode", f"unknown mode {request.mode}")
    policies = rollout_pb2.EarlyTerminationPolicy
    _check(request.early_termination in policies.values(), "early_termination", "unknown policy")
    sampling = sampling_of(request.sampling)
    n = check_samples(request.samples_per_prompt, 0, "samples_per_prompt")
    prompts = [rollout_prompt(p, i, vocab_size, f"prompts[{i}]") for i, p in enumerate(request.prompts)]
    _check(request.reward_timing in rollout_pb2.RewardTiming.values(), "reward_timing", "unknown reward timing")
    _check(len(request.min_weight_version) <= MAX_VERSION_CHARS, "min_weight_version", "too long")
    _check(not request.scorer or ":" in request.scorer, "scorer", "give host:port of a mimo.v1.Verifier service")
    launch_order = request.early_termination == rollout_pb2.EARLY_TERMINATION_POLICY_LAUNCH_ORDER
    dynamic = dynamic_sampling(request, launch_order)
    for p in prompts:  # checked here, before anything runs, so the error names the prompt
        if p.resume is not None and sampling.max_new_tokens is not None:
            done = len(p.resume.token_ids)
            _check(
                done < sampling.max_new_tokens,
                f"prompts[{p.index}].resume.token_ids",
                f"{done} tokens already reach sampling.max_new_tokens ({sampling.max_new_tokens})",
            )
    _check(
        not (dynamic and any(p.resume is not None for p in prompts)),
        "prompts",
        "resume partial samples in a rollout without target_valid_groups",
    )
    fifo = request.early_termination == rollout_pb2.EARLY_TERMINATION_POLICY_FIFO
    _check(
        not (fifo and dynamic), "early_termination", "FIFO counts finished prompts; use LAUNCH_ORDER with valid groups"
    )
    if fifo and not 0 < request.target_prompts <= len(request.prompts):
        raise d.InvalidRequest(
            "target_prompts", f"FIFO early termination needs 1..{len(request.prompts)} target prompts"
        )
    return d.RolloutSpec(
        rollout_id=request.rollout_id,
        prompts=tuple(prompts),
        samples_per_prompt=n,
        sampling=sampling,
        weight_version=request.weight_version,
        max_samples_in_flight=request.max_samples_in_flight,
        target_prompts=request.target_prompts if fifo else None,
        mode=d.RolloutMode.SYNCHRONOUS
        if request.mode == rollout_pb2.ROLLOUT_MODE_SYNCHRONOUS
        else d.RolloutMode.SEAMLESS,
        sync_batch_prompts=request.sync_batch_prompts,
        deadline=deadline,
        dynamic=dynamic,
        dataset=request.dataset,
        scorer=request.scorer,
        reward_timing=d.RewardTiming.PER_GROUP
        if request.reward_timing == rollout_pb2.REWARD_TIMING_PER_GROUP
        else d.RewardTiming.PER_SAMPLE,
        min_weight_version=request.min_weight_version,
        partial_rollout=request.partial_rollout,
    )


# --- domain → protos ------------------------------------------------------------------------------------------
FINISH = {
    d.FinishReason.UNSPECIFIED: common_pb2.FINISH_REASON_UNSPECIFIED,
    d.FinishReason.STOP: common_pb2.FINISH_REASON_STOP,
    d.FinishReason.LENGTH: common_pb2.FINISH_REASON_LENGTH,
    d.FinishReason.ABORT: common_pb2.FINISH_REASON_ABORT,
    d.FinishReason.ERROR: common_pb2.FINISH_REASON_ERROR,
}


def logprobs_pb(lps: Sequence[d.TokenLogprob]) -> list[common_pb2.TokenLogprob]:
    return [
        common_pb2.TokenLogprob(
            token_id=lp.token_id,
            logprob=lp.logprob,
            top=[common_pb2.TopLogprob(token_id=t, logprob=v) for t, v in lp.top],
        )
        for lp in lps
    ]


def delta_pb(delta: d.Delta) -> inference_pb2.StreamDelta:
    out = inference_pb2.StreamDelta(
        index=delta.index,
        text=delta.text,
        reasoning=delta.reasoning,
        token_ids=delta.token_ids,
        finish_reason=FINISH[delta.finish_reason],
    )
    if delta.logprobs:
        out.logprobs.extend(logprobs_pb(delta.logprobs))
    if delta.matched_stop is not None:
        out.matched_stop = delta.matched_stop
    return out


def choice_pb(c: d.Choice) -> inference_pb2.Choice:
    out = inference_pb2.Choice(
        index=c.index,
        text=c.text,
        reasoning=c.reasoning,
        token_ids=c.token_ids,
        finish_reason=FINISH[c.finish_reason],
        logprobs=logprobs_pb(c.logprobs),
    )
    if c.matched_stop is not None:
        out.matched_stop = c.matched_stop
    return out


def usage_pb(u: d.Usage) -> common_pb2.Usage:
    return common_pb2.Usage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        reasoning_tokens=u.reasoning_tokens,
        cached_tokens=u.cached_tokens,
        total_tokens=u.total_tokens,
    )


def rollout_event_pb(spec: d.RolloutSpec, event: d.RolloutEvent) -> rollout_pb2.RolloutEvent:
    out = rollout_pb2.RolloutEvent(rollout_id=spec.rollout_id, weight_version=spec.weight_version)
    if isinstance(event, d.SampleFinished):
        verification = verifier_pb2.VerifyResult.FromString(event.reward.payload)
        out.sample.CopyFrom(
            rollout_pb2.SampleFinished(
                prompt_index=event.prompt_index,
                prompt_id=event.prompt_id,
                sample_index=event.sample_index,
                text=event.text,
                token_ids=event.token_ids,
                finish_reason=FINISH[event.finish_reason],
                reward=event.reward.reward,
                verification=verification,
                generation_s=event.generation_s,
                reward_wait_s=event.reward_wait_s,
                usage=usage_pb(event.usage),
                prompt_token_ids=event.prompt_token_ids,
                logprobs=event.logprobs,
                weight_version=event.weight_version,
                num_resumed_tokens=event.num_resumed_tokens,
                resumed_weight_version=event.resumed_weight_version,
            )
        )
    elif isinstance(event, d.GroupFinished):
        out.group.CopyFrom(
            rollout_pb2.GroupFinished(
                prompt_index=event.prompt_index,
                prompt_id=event.prompt_id,
                num_samples=event.num_samples,
                pass_rate=event.pass_rate,
                mean_reward=event.mean_reward,
                all_correct=event.all_correct,
                all_wrong=event.all_wrong,
                num_reward_errors=event.num_reward_errors,
                num_aborted=event.num_aborted,
                zero_variance=event.zero_variance,
                scored=event.scored,
            )
        )
    else:
        out.finished.CopyFrom(
            rollout_pb2.RolloutFinished(
                num_prompts_finished=event.num_prompts_finished,
                num_prompts_unfinished=event.num_prompts_unfinished,
                num_samples_finished=event.num_samples_finished,
                num_samples_aborted=event.num_samples_aborted,
                wall_s=event.wall_s,
                samples_per_s=event.samples_per_s,
                completion_tokens_per_s=event.completion_tokens_per_s,
                reward_wait_s=event.reward_wait_s,
                early_terminated=event.early_terminated,
                unfinished_prompt_ids=event.unfinished_prompt_ids,
                num_reward_errors=event.num_reward_errors,
                **batch_fields(event.batch),
            )
        )
    return out


def batch_fields(b: d.BatchReport) -> dict[str, object]:
    stats = [
        rollout_pb2.ProblemStat(
            prompt_id=s.prompt_id,
            rollouts=s.rollouts,
            pass_rate=s.pass_rate,
            last_pass_rate=s.last_pass_rate,
            easy=s.easy,
        )
        for s in b.dataset_stats
    ]
    return {
        "selected_prompt_ids": b.selected_prompt_ids,
        "num_groups_valid": b.num_groups_valid,
        "num_groups_zero_variance": b.num_groups_zero_variance,
        "num_groups_surplus": b.num_groups_surplus,
        "num_prompts_launched": b.num_prompts_launched,
        "completion_tokens": b.completion_tokens,
        "selected_completion_tokens": b.selected_completion_tokens,
        "target_met": b.target_met,
        "dataset_stats": stats,
    }
