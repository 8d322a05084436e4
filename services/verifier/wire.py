"""mimo.v1 Verifier messages to domain tasks (validated, errors naming the field) and results back."""

from __future__ import annotations

import json
import math

from mimo_client.v1 import verifier_pb2 as pb

from services.verifier.domain import CodeTask, CodeTest, MathTask, Result, RewardMode, Task
from services.verifier.rewards import RewardError, level_scores

MAX_TASKS_PER_REQUEST = 4096
MAX_RESPONSE_CHARS = 1 << 20
MAX_TESTS_PER_TASK = 1000
MIN_MEMORY_BYTES = 32 << 20
LANGUAGES = ("python", "cpp")


class InvalidTask(ValueError):
    """A request field that cannot be used; the message starts with the field's path."""


def _math(path: str, m: pb.MathTask) -> MathTask:
    if not m.references:
        raise InvalidTask(f"{path}.math.references: give at least one reference answer")
    for j, ref in enumerate(m.references):
        if not ref.strip():
            raise InvalidTask(f"{path}.math.references[{j}]: empty reference answer")
    return MathTask(tuple(m.references))


def _json_field(path: str, text: str) -> None:
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidTask(f"{path}: not valid JSON ({e.msg})") from e


def _test(path: str, t: pb.CodeTest, language: str, entry_point: str) -> CodeTest:
    is_call = t.HasField("args_json")
    if is_call:
        if language != "python":
            raise InvalidTask(f"{path}.args_json: function-call tests need language python")
        if not entry_point:
            raise InvalidTask(f"{path}.args_json: function-call tests need the task's entry_point")
        _json_field(f"{path}.args_json", t.args_json)
        if not t.HasField("expected_json"):
            raise InvalidTask(f"{path}.expected_json: required with args_json")
        _json_field(f"{path}.expected_json", t.expected_json)
    elif t.HasField("expected_json"):
        raise InvalidTask(f"{path}.expected_json: only for function-call tests (set args_json)")
    return CodeTest(
        stdin=t.stdin,
        expected_stdout=t.expected_stdout,
        level=t.level or 1,
        args_json=t.args_json if is_call else None,
        expected_json=t.expected_json if is_call else None,
    )


def _code(path: str, c: pb.CodeTask, has_cxx: bool, max_time_limit_s: float, max_memory_bytes: int) -> CodeTask:
    language = (c.language or "python").lower()
    if language not in LANGUAGES:
        raise InvalidTask(f"{path}.code.language: {c.language!r} is not one of {', '.join(LANGUAGES)}")
    if language == "cpp" and not has_cxx:
        raise InvalidTask(f"{path}.code.language: cpp is not available on this server (no g++)")
    if not c.tests:
        raise InvalidTask(f"{path}.code.tests: give at least one test")
    if len(c.tests) > MAX_TESTS_PER_TASK:
        raise InvalidTask(f"{path}.code.tests: {len(c.tests)} tests, at most {MAX_TESTS_PER_TASK}")
    if c.entry_point and not c.entry_point.isidentifier():
        raise InvalidTask(f"{path}.code.entry_point: {c.entry_point!r} is not a Python identifier")
    tests = tuple(_test(f"{path}.code.tests[{j}]", t, language, c.entry_point) for j, t in enumerate(c.tests))
    if c.HasField("time_limit_s") and not 0 < c.time_limit_s <= max_time_limit_s:
        raise InvalidTask(f"{path}.code.time_limit_s: must be in (0, {max_time_limit_s:g}]")
    if c.HasField("memory_limit_bytes") and not MIN_MEMORY_BYTES <= c.memory_limit_bytes <= max_memory_bytes:
        raise InvalidTask(f"{path}.code.memory_limit_bytes: must be in [{MIN_MEMORY_BYTES}, {max_memory_bytes}]")
    if c.HasField("float_tolerance") and not (c.float_tolerance >= 0 and math.isfinite(c.float_tolerance)):
        raise InvalidTask(f"{path}.code.float_tolerance: must be a non-negative number")
    if c.reward_mode not in RewardMode._value2member_map_:
        raise InvalidTask(f"{path}.code.reward_mode: unknown value {c.reward_mode}")
    weights = tuple(c.level_weights)
    try:
        level_scores([t.level for t in tests], weights)
    except RewardError as e:
        raise InvalidTask(f"{path}.code.{e}") from e
    return CodeTask(
        tests=tests,
        language=language,
        reward_mode=RewardMode(c.reward_mode or RewardMode.STRICT),
        level_weights=weights,
        time_limit_s=c.time_limit_s if c.HasField("time_limit_s") else None,
        memory_limit_bytes=c.memory_limit_bytes if c.HasField("memory_limit_bytes") else None,
        float_tolerance=c.float_tolerance if c.HasField("float_tolerance") else None,
        entry_point=c.entry_point,
    )


def tasks_from_request(
    request: pb.VerifyRequest, *, has_cxx: bool, max_time_limit_s: float, max_memory_bytes: int
) -> list[Task]:
    """Validate a request and turn it into tasks; InvalidTask names the first bad field."""
    if not request.tasks:
        raise InvalidTask("tasks: empty; send at least one task")
    if len(request.tasks) > MAX_TASKS_PER_REQUEST:
        raise InvalidTask(f"tasks: {len(request.tasks)} tasks, at most {MAX_TASKS_PER_REQUEST} per request")
    tasks = []
    for i, t in enumerate(request.tasks):
        path = f"tasks[{i}]"
        if len(t.response) > MAX_RESPONSE_CHARS:
            raise InvalidTask(f"{path}.response: {len(t.response)} characters, at most {MAX_RESPONSE_CHARS}")
        which = t.WhichOneof("kind")
        if which == "math":
            kind: MathTask | CodeTask = _math(path, t.math)
        elif which == "code":
            kind = _code(path, t.code, has_cxx, max_time_limit_s, max_memory_bytes)
        else:
            raise InvalidTask(f"{path}.kind: set math or code")
        tasks.append(Task(t.task_id, t.response, kind))
    return tasks


def result_to_proto(r: Result) -> pb.VerifyResult:
    return pb.VerifyResult(
        index=r.index,
        task_id=r.task_id,
        reward=r.reward,
        verdict=int(r.verdict),
        reason=r.reason,
        extracted_answer=r.extracted_answer,
        tests=[
            pb.TestOutcome(index=t.index, level=t.level, status=int(t.status), elapsed_s=t.elapsed_s, detail=t.detail)
            for t in r.tests
        ],
        queue_s=r.queue_s,
        elapsed_s=r.elapsed_s,
    )
