"""Request building shared by the sync and asyncio clients: Python inputs -> mimo.v1 request protos."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from mimo_client.types import CodeTask, MathTask, Message, RolloutPrompt, VerifyTask
from mimo_client.v1 import common_pb2, inference_pb2, rollout_pb2, tokenizer_pb2, verifier_pb2

ChatInput = Sequence[Message | Mapping[str, Any]]

SAMPLING_FIELDS = frozenset(common_pb2.SamplingParams.DESCRIPTOR.fields_by_name)
_REWARD_MODES = {"pass_rate": 1, "strict": 2, "soft": 3}
_EARLY_TERMINATION = {"never": 1, "fifo": 2, "launch_order": 3}
_ROLLOUT_MODES = {"seamless": 1, "synchronous": 2}


def _choose(name: str, value: str, choices: Mapping[str, int]) -> int:
    try:
        return choices[value.lower()]
    except KeyError:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}") from None


def sampling_params(options: Mapping[str, Any]) -> common_pb2.SamplingParams:
    """Set only the fields given (and not None), so the server applies MiMo's defaults to the rest."""
    unknown = sorted(set(options) - SAMPLING_FIELDS)
    if unknown:
        raise TypeError(f"unknown sampling option(s) {unknown}; known: {sorted(SAMPLING_FIELDS)}")
    params = common_pb2.SamplingParams()
    for name, value in options.items():
        if value is None:
            continue
        if name == "stop":
            params.stop.extend([value] if isinstance(value, str) else value)
        elif name == "stop_token_ids":
            params.stop_token_ids.extend(value)
        else:
            setattr(params, name, value)
    return params


def chat_messages(messages: ChatInput) -> list[common_pb2.ChatMessage]:
    """Chat turns as `Message` or `{"role": ..., "content": ...}` (optionally "reasoning_content")."""
    if isinstance(messages, str | bytes):
        raise TypeError("messages must be a list of {'role': ..., 'content': ...} or Message, not a string")
    out = []
    for i, message in enumerate(messages):
        if isinstance(message, Message):
            role, content, reasoning = message.role, message.content, message.reasoning_content
        elif isinstance(message, Mapping):
            if "role" not in message or "content" not in message:
                raise ValueError(f"messages[{i}] needs 'role' and 'content', got keys {sorted(message)}")
            role, content, reasoning = message["role"], message["content"], message.get("reasoning_content")
        else:
            raise TypeError(f"messages[{i}] must be a dict or Message, got {type(message).__name__}")
        pb = common_pb2.ChatMessage(role=role, content=content)
        if reasoning is not None:
            pb.reasoning_content = reasoning
        out.append(pb)
    return out


def generate_request(
    prompt: str | Sequence[int], sampling: Mapping[str, Any], **fields: Any
) -> inference_pb2.GenerateRequest:
    """`prompt` is text or token ids; `fields` are the request's other fields (model, n, priority, ...)."""
    request = inference_pb2.GenerateRequest(sampling=sampling_params(sampling), **fields)
    if isinstance(prompt, str):
        request.text = prompt
    else:
        request.token_ids.ids.extend(prompt)
    return request


def chat_request(messages: ChatInput, sampling: Mapping[str, Any], **fields: Any) -> inference_pb2.ChatRequest:
    return inference_pb2.ChatRequest(messages=chat_messages(messages), sampling=sampling_params(sampling), **fields)


def as_batch(texts: str | Sequence[str]) -> tuple[list[str], bool]:
    """A list of texts and whether the caller passed a single one."""
    return ([texts], True) if isinstance(texts, str) else (list(texts), False)


def as_sequences(ids: Sequence[int] | Sequence[Sequence[int]]) -> tuple[list[common_pb2.TokenIds], bool]:
    """Token id sequences and whether the caller passed a single one (a flat list of ints)."""
    if all(isinstance(i, numbers.Integral) for i in ids):
        return [common_pb2.TokenIds(ids=ids)], True  # type: ignore[arg-type]
    return [common_pb2.TokenIds(ids=seq) for seq in ids], False  # type: ignore[arg-type]


def tokenize_request(texts: list[str], add_special_tokens: bool, return_offsets: bool) -> tokenizer_pb2.TokenizeRequest:
    return tokenizer_pb2.TokenizeRequest(
        texts=texts, add_special_tokens=add_special_tokens, return_offsets=return_offsets
    )


def apply_chat_template_request(
    messages: ChatInput, add_generation_prompt: bool
) -> tokenizer_pb2.ApplyChatTemplateRequest:
    return tokenizer_pb2.ApplyChatTemplateRequest(
        messages=chat_messages(messages), add_generation_prompt=add_generation_prompt
    )


def math_task(task: MathTask) -> verifier_pb2.MathTask:
    references = [task.references] if isinstance(task.references, str) else task.references
    return verifier_pb2.MathTask(references=references)


def code_task(task: CodeTask) -> verifier_pb2.CodeTask:
    pb = verifier_pb2.CodeTask(
        language=task.language,
        reward_mode=_choose("reward_mode", task.reward_mode, _REWARD_MODES),  # type: ignore[arg-type]
        level_weights=task.level_weights,
        entry_point=task.entry_point,
    )
    for name in ("time_limit_s", "memory_limit_bytes", "float_tolerance"):
        if getattr(task, name) is not None:
            setattr(pb, name, getattr(task, name))
    for test in task.tests:
        t = pb.tests.add(stdin=test.stdin, expected_stdout=test.expected_stdout, level=test.level)
        if test.args_json is not None:
            t.args_json = test.args_json
        if test.expected_json is not None:
            t.expected_json = test.expected_json
    return pb


def verify_request(tasks: Sequence[VerifyTask]) -> verifier_pb2.VerifyRequest:
    request = verifier_pb2.VerifyRequest()
    for task in tasks:
        pb = request.tasks.add(task_id=task.task_id, response=task.response)
        if isinstance(task.check, MathTask):
            pb.math.CopyFrom(math_task(task.check))
        elif isinstance(task.check, CodeTask):
            pb.code.CopyFrom(code_task(task.check))
        else:
            raise TypeError(f"VerifyTask.check must be MathTask or CodeTask, got {type(task.check).__name__}")
    return request


def rollout_prompt(prompt: RolloutPrompt) -> rollout_pb2.RolloutPrompt:
    pb = rollout_pb2.RolloutPrompt(prompt_id=prompt.prompt_id)
    if (prompt.messages is None) == (prompt.token_ids is None):
        raise ValueError(f"prompt {prompt.prompt_id!r} needs exactly one of messages and token_ids")
    if prompt.messages is not None:
        pb.messages.messages.extend(chat_messages(prompt.messages))
    else:
        pb.token_ids.ids.extend(prompt.token_ids or ())
    if isinstance(prompt.reward, MathTask):
        pb.math.CopyFrom(math_task(prompt.reward))
    elif isinstance(prompt.reward, CodeTask):
        pb.code.CopyFrom(code_task(prompt.reward))
    if prompt.resume is not None:
        r = prompt.resume
        pb.resume.CopyFrom(
            rollout_pb2.PartialSample(
                sample_index=r.sample_index, token_ids=r.token_ids, logprobs=r.logprobs, weight_version=r.weight_version
            )
        )
    return pb


def rollout_request(
    prompts: Sequence[RolloutPrompt],
    sampling: Mapping[str, Any],
    *,
    early_termination: str,
    mode: str,
    **fields: Any,
) -> rollout_pb2.RolloutRequest:
    """`fields`: rollout_id, samples_per_prompt, weight_version, max_samples_in_flight, target_prompts, ..."""
    return rollout_pb2.RolloutRequest(
        prompts=[rollout_prompt(p) for p in prompts],
        sampling=sampling_params(sampling),
        early_termination=_choose("early_termination", early_termination, _EARLY_TERMINATION),  # type: ignore[arg-type]
        mode=_choose("mode", mode, _ROLLOUT_MODES),  # type: ignore[arg-type]
        **fields,
    )
