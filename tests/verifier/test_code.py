"""Reading code out of responses, comparing outputs, and turning a process outcome into a test status."""

from __future__ import annotations

import signal

import pytest

from services.verifier.code import compare_json, compare_stdout, judge
from services.verifier.domain import CodeTest, TestStatus
from services.verifier.extract import last_code_block
from services.verifier.sandbox import Limits, RunOutcome

LIMITS = Limits(time_limit_s=1.0)


def test_takes_the_last_block_of_the_language_after_think() -> None:
    response = (
        "<think>\n```python\nprint('draft')\n```\n</think>\n"
        "Here is the solution:\n```python\nprint('final')\n```\nExample output:\n```text\nfinal\n```"
    )
    assert last_code_block(response, "python") == "print('final')"


def test_falls_back_to_the_last_untagged_block_and_refuses_unclosed_thinking() -> None:
    assert last_code_block("```\nx = 1\n```\n```\nx = 2\n```", "python") == "x = 2"
    assert last_code_block("```cpp\nint main(){}\n```", "cpp") == "int main(){}"
    assert last_code_block("<think>\n```python\nprint(1)\n```", "python") is None
    assert last_code_block("no code here", "python") is None
    assert last_code_block("```python\n\n```", "python") is None


def test_stdout_comparison_strips_lines_and_whitespace_runs() -> None:
    assert compare_stdout(b"1 2\r\n3   \n\n", "1  2\n3") is None
    assert compare_stdout(b"1 2\n3\n", "1 2\n4") == "line 2: expected '4', got '3'"
    assert compare_stdout(b"1\n2\n", "1") == "expected 1 line(s), got 2"
    assert compare_stdout(b"", "") is None
    assert compare_stdout(b"YES\n", "yes") is not None  # case matters


def test_float_tolerance_is_relative_for_large_and_absolute_for_small_values() -> None:
    assert compare_stdout(b"0.3333333\n", "0.33333333") is not None
    assert compare_stdout(b"0.3333333\n", "0.33333333", 1e-6) is None
    assert compare_stdout(b"1000000.5\n", "1000000.0", 1e-6) is None  # 0.5 ≤ 1e-6·1e6
    assert compare_stdout(b"1000002\n", "1000000", 1e-6) is not None
    assert compare_stdout(b"nan\n", "nan", 1e-6) is None  # equal tokens
    assert compare_stdout(b"abc 1.0\n", "abd 1.0", 1e-6) is not None


def test_json_comparison_for_function_calls() -> None:
    assert compare_json(b"[1, 2]", "[1, 2]") is None
    assert compare_json(b'{"a": 1.0000001}', '{"a": 1}', 1e-6) is None
    assert compare_json(b"true", "1") is not None  # booleans are not numbers
    assert compare_json(b"", "1") == "the function returned no JSON-serialisable value"
    assert compare_json(b"[1, 2]", "[2, 1]") is not None


def _judge(outcome: RunOutcome, test: CodeTest | None = None) -> TestStatus:
    return judge(outcome, test or CodeTest(stdin="", expected_stdout="ok"), LIMITS, None)[0]


def test_statuses_from_process_outcomes() -> None:
    assert _judge(RunOutcome(exit_code=0, stdout=b"ok\n")) == TestStatus.PASSED
    assert _judge(RunOutcome(exit_code=0, stdout=b"no\n")) == TestStatus.WRONG_ANSWER
    assert _judge(RunOutcome(exit_code=1, stderr="ZeroDivisionError")) == TestStatus.RUNTIME_ERROR
    assert _judge(RunOutcome(exit_code=1, stderr="MemoryError")) == TestStatus.MEMORY_LIMIT
    assert _judge(RunOutcome(signal=signal.SIGABRT, stderr="std::bad_alloc")) == TestStatus.MEMORY_LIMIT
    assert _judge(RunOutcome(signal=signal.SIGKILL, timed_out=True)) == TestStatus.TIME_LIMIT
    assert _judge(RunOutcome(signal=signal.SIGXCPU)) == TestStatus.TIME_LIMIT
    assert _judge(RunOutcome(exit_code=0, cpu_s=1.5, stdout=b"ok")) == TestStatus.TIME_LIMIT
    assert _judge(RunOutcome(signal=signal.SIGKILL, output_exceeded=True)) == TestStatus.OUTPUT_LIMIT
    assert _judge(RunOutcome(signal=signal.SIGXFSZ)) == TestStatus.OUTPUT_LIMIT
    assert _judge(RunOutcome(signal=signal.SIGSEGV)) == TestStatus.RUNTIME_ERROR
    assert _judge(RunOutcome(error="bwrap failed")) == TestStatus.SANDBOX_ERROR
    assert _judge(RunOutcome(signal=signal.SIGKILL, timed_out=True, oom_killed=True)) == TestStatus.MEMORY_LIMIT
    call = CodeTest(args_json="[1]", expected_json="[2]")
    assert _judge(RunOutcome(exit_code=0, stdout=b"[2]"), call) == TestStatus.PASSED


@pytest.mark.parametrize("stderr", ["", "Traceback ...\nValueError: bad"])
def test_a_runner_stopped_mid_test_fails_the_test_rather_than_erroring(stderr: str) -> None:
    outcome = RunOutcome(error="the sandbox exited", runner_died=True, stderr=stderr)
    assert _judge(outcome) == TestStatus.RUNTIME_ERROR
