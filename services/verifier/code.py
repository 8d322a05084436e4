"""Code tasks: take the last code block, run every test in one sandbox, judge each outcome, score the task."""

from __future__ import annotations

import json
import math
import signal
from dataclasses import dataclass
from typing import Any

from services.verifier import rewards
from services.verifier.domain import CodeTask, CodeTest, RewardMode, TestResult, TestStatus, Verdict
from services.verifier.extract import last_code_block
from services.verifier.sandbox import Limits, RunOutcome, Sandbox, SandboxError

MAX_DETAIL_CHARS = 300
MAX_CODE_CHARS = 1000  # of the extracted code echoed back in the result
_MEMORY_HINTS = ("MemoryError", "std::bad_alloc", "Cannot allocate memory", "out of memory")


@dataclass(frozen=True, slots=True)
class CodeScore:
    """A scored code task (the service adds index, id and timings)."""

    reward: float
    verdict: Verdict
    reason: str
    code: str
    tests: tuple[TestResult, ...]
    has_sandbox_error: bool = False


def _short(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_DETAIL_CHARS else "…" + text[-MAX_DETAIL_CHARS:]


def _floats_close(a: str, b: str, tol: float) -> bool:
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return math.isfinite(x) and math.isfinite(y) and abs(x - y) <= tol * max(1.0, abs(y))


def compare_stdout(actual: bytes, expected: str, float_tolerance: float | None = None) -> str | None:
    """None when the output matches, else what differs first.

    Lines are compared after stripping the whole output and each line; within a line, whitespace
    runs do not matter. With a tolerance, numeric tokens match when |a-b| ≤ tol·max(1, |b|).
    """
    got = actual.decode("utf-8", "replace").replace("\r\n", "\n").strip().split("\n")
    want = expected.replace("\r\n", "\n").strip().split("\n")
    if len(got) != len(want):
        return f"expected {len(want)} line(s), got {len(got)}"
    for n, (g, w) in enumerate(zip(got, want, strict=True), 1):
        gt, wt = g.split(), w.split()
        if gt == wt:
            continue
        if (
            float_tolerance is not None
            and len(gt) == len(wt)
            and all(a == b or _floats_close(a, b, float_tolerance) for a, b in zip(gt, wt, strict=True))
        ):
            continue
        return f"line {n}: expected {w.strip()[:80]!r}, got {g.strip()[:80]!r}"
    return None


def _json_equal(a: Any, b: Any, tol: float | None) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b or (tol is not None and abs(a - b) <= tol * max(1.0, abs(b)))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k], tol) for k in a)
    return bool(a == b)


def compare_json(actual: bytes, expected_json: str, float_tolerance: float | None = None) -> str | None:
    """None when the returned value (JSON) equals the expected JSON value, else a short difference."""
    try:
        got = json.loads(actual.decode("utf-8", "replace"))
    except ValueError:
        return "the function returned no JSON-serialisable value"
    want = json.loads(expected_json)
    if _json_equal(got, want, float_tolerance):
        return None
    return f"expected {json.dumps(want)[:80]}, got {json.dumps(got)[:80]}"


def judge(outcome: RunOutcome, test: CodeTest, limits: Limits, float_tolerance: float | None) -> tuple[TestStatus, str]:
    """The status of one test and a short detail for a person."""
    if outcome.runner_died:
        return TestStatus.RUNTIME_ERROR, _short(f"the sandbox runner stopped during this test: {outcome.error}")
    if outcome.error:
        return TestStatus.SANDBOX_ERROR, _short(outcome.error)
    if outcome.oom_killed:  # the sandbox's memory cgroup killed a process: the cause, even if time ran out too
        return (
            TestStatus.MEMORY_LIMIT,
            f"the sandbox ran out of memory (limit {limits.memory_bytes >> 20} MiB per test)",
        )
    if outcome.output_exceeded:
        return TestStatus.OUTPUT_LIMIT, f"output passed the {limits.output_bytes} byte limit"
    if outcome.signal == signal.SIGXFSZ:
        return TestStatus.OUTPUT_LIMIT, f"wrote a file past the {limits.file_bytes} byte limit"
    if outcome.timed_out or outcome.signal == signal.SIGXCPU or outcome.cpu_s > limits.time_limit_s:
        return (
            TestStatus.TIME_LIMIT,
            f"ran {outcome.cpu_s:.2f} s CPU / {outcome.wall_s:.2f} s wall (limit {limits.time_limit_s:g} s)",
        )
    if any(h in outcome.stderr for h in _MEMORY_HINTS):
        return TestStatus.MEMORY_LIMIT, f"ran out of memory (limit {limits.memory_bytes >> 20} MiB)"
    if outcome.signal is not None:
        return TestStatus.RUNTIME_ERROR, _short(f"killed by {signal.Signals(outcome.signal).name}; {outcome.stderr}")
    if outcome.exit_code != 0:
        return TestStatus.RUNTIME_ERROR, _short(f"exit code {outcome.exit_code}; {outcome.stderr}")
    if test.is_call:
        diff = compare_json(outcome.stdout, test.expected_json or "null", float_tolerance)
    else:
        diff = compare_stdout(outcome.stdout, test.expected_stdout, float_tolerance)
    return (TestStatus.PASSED, "") if diff is None else (TestStatus.WRONG_ANSWER, _short(diff))


def _summary(task: CodeTask, results: list[TestResult], value: float, mode: RewardMode) -> str:
    by_level: dict[int, list[bool]] = {}
    for r in results:
        by_level.setdefault(r.level, []).append(r.status == TestStatus.PASSED)
    levels = ", ".join(f"level {k} {sum(v)}/{len(v)}" for k, v in sorted(by_level.items()))
    passed = sum(r.status == TestStatus.PASSED for r in results)
    name = {RewardMode.PASS_RATE: "pass-rate", RewardMode.SOFT: "soft"}.get(mode, "strict")
    not_run = sum(r.status == TestStatus.UNSPECIFIED for r in results)
    skipped = f"; {not_run} not run (no more reward reachable)" if not_run else ""
    return f"passed {passed}/{len(results)} tests ({levels}){skipped}; {name} reward {value:.3f}"


async def score_code(task: CodeTask, response: str, sandbox: Sandbox, limits: Limits) -> CodeScore:
    """Run the response's code against the task's tests (easiest level first) and compute its reward."""
    code = last_code_block(response, task.language)
    if code is None:
        return CodeScore(0.0, Verdict.NO_ANSWER, "no fenced code block after </think>", "", ())
    order = sorted(range(len(task.tests)), key=lambda i: task.tests[i].level)
    results: dict[int, TestResult] = {}
    try:
        async with sandbox.session(task.language, code, task.entry_point, limits) as session:
            if session.compile_error is not None:
                detail = _short(session.compile_error)
                tests = tuple(
                    TestResult(i, t.level, TestStatus.COMPILE_ERROR, 0.0, detail) for i, t in enumerate(task.tests)
                )
                return CodeScore(0.0, Verdict.INCORRECT, f"compile error: {detail}", code[:MAX_CODE_CHARS], tests)
            stopped = ""
            for i in order:
                test = task.tests[i]
                if stopped:
                    results[i] = TestResult(i, test.level, TestStatus.UNSPECIFIED, 0.0, stopped)
                    continue
                outcome = await session.run(test.stdin, test.args_json)
                status, detail = judge(outcome, test, limits, task.float_tolerance)
                results[i] = TestResult(i, test.level, status, outcome.wall_s, detail)
                if outcome.runner_died:
                    stopped = "not run: the sandbox runner was stopped by an earlier test"
                elif status != TestStatus.PASSED and rewards.stops_on_failure(task.reward_mode):
                    stopped = f"not run: test {i} (level {test.level}) failed, so no later level can count"
    except SandboxError as e:
        tests = tuple(
            TestResult(i, t.level, TestStatus.SANDBOX_ERROR, 0.0, _short(str(e))) for i, t in enumerate(task.tests)
        )
        return CodeScore(0.0, Verdict.ERROR, f"sandbox error: {_short(str(e))}", code[:MAX_CODE_CHARS], tests, True)
    ordered = [results[i] for i in range(len(task.tests))]
    if any(r.status == TestStatus.SANDBOX_ERROR for r in ordered):
        return CodeScore(
            0.0, Verdict.ERROR, "sandbox error: see the tests", code[:MAX_CODE_CHARS], tuple(ordered), True
        )
    passed = [r.status == TestStatus.PASSED for r in ordered]
    value = rewards.reward(task.reward_mode, [t.level for t in task.tests], passed, task.level_weights)
    verdict = Verdict.CORRECT if all(passed) else Verdict.INCORRECT if not any(passed) else Verdict.PARTIAL
    return CodeScore(
        value, verdict, _summary(task, ordered, value, task.reward_mode), code[:MAX_CODE_CHARS], tuple(ordered)
    )
