"""Domain types of the verifier: tasks in, results out (the enums share the proto's numbers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class Verdict(IntEnum):
    """mimo.v1.Verdict."""

    UNSPECIFIED = 0
    CORRECT = 1
    INCORRECT = 2
    PARTIAL = 3
    NO_ANSWER = 4
    TIMEOUT = 5
    ERROR = 6


class TestStatus(IntEnum):
    """mimo.v1.TestStatus; UNSPECIFIED marks a test that was not run (no more reward reachable)."""

    __test__ = False  # not a pytest class

    UNSPECIFIED = 0
    PASSED = 1
    WRONG_ANSWER = 2
    RUNTIME_ERROR = 3
    TIME_LIMIT = 4
    MEMORY_LIMIT = 5
    OUTPUT_LIMIT = 6
    SANDBOX_ERROR = 7
    COMPILE_ERROR = 8


class RewardMode(IntEnum):
    """mimo.v1.RewardMode; UNSPECIFIED means STRICT for code."""

    UNSPECIFIED = 0
    PASS_RATE = 1
    STRICT = 2
    SOFT = 3


@dataclass(frozen=True, slots=True)
class MathTask:
    """Check the response's final answer against any of the references."""

    references: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CodeTest:
    """One test: stdin/stdout, or (Python) a call `entry_point(*args)` compared as JSON."""

    __test__ = False

    stdin: str = ""
    expected_stdout: str = ""
    level: int = 1
    args_json: str | None = None
    expected_json: str | None = None

    @property
    def is_call(self) -> bool:
        return self.args_json is not None


@dataclass(frozen=True, slots=True)
class CodeTask:
    """Run the response's last code block against the tests and score it."""

    tests: tuple[CodeTest, ...]
    language: str = "python"
    reward_mode: RewardMode = RewardMode.STRICT
    level_weights: tuple[float, ...] = ()
    time_limit_s: float | None = None
    memory_limit_bytes: int | None = None
    float_tolerance: float | None = None
    entry_point: str = ""


@dataclass(frozen=True, slots=True)
class Task:
    """A response to score, with what to score it against."""

    task_id: str
    response: str
    kind: MathTask | CodeTask


@dataclass(frozen=True, slots=True)
class TestResult:
    """The outcome of one code test."""

    __test__ = False

    index: int
    level: int
    status: TestStatus
    elapsed_s: float = 0.0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Result:
    """The reward for one task, with a verdict and a reason a person can read."""

    index: int
    task_id: str
    reward: float
    verdict: Verdict
    reason: str
    extracted_answer: str = ""
    tests: tuple[TestResult, ...] = field(default=())
    queue_s: float = 0.0
    elapsed_s: float = 0.0
