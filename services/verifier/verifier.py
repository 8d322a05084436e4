"""The verifier core, usable in-process without gRPC: math in a process pool, code in sandboxes.

    async with Verifier(VerifierSettings()) as verifier:
        results = await verifier.verify([Task("t1", response, MathTask(("42",)))])

Create it (which starts the math processes) before any gRPC server exists in the process.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

from services.verifier import metrics
from services.verifier.code import score_code
from services.verifier.domain import CodeTask, MathTask, Result, Task, TestStatus, Verdict
from services.verifier.pool import MathPool, PoolSettings
from services.verifier.sandbox import Limits, Sandbox, SandboxConfig


@dataclass(frozen=True, slots=True)
class VerifierSettings:
    """Pools, sandbox and limits; per-task limits may lower or raise the defaults up to the maxima."""

    math: PoolSettings = field(default_factory=PoolSettings)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    limits: Limits = field(default_factory=Limits)
    max_sandboxes: int = field(default_factory=lambda: 2 * (os.cpu_count() or 1))
    max_pending_tasks: int = 20_000
    max_time_limit_s: float = 30.0
    max_memory_bytes: int = 4 << 30


class Overloaded(RuntimeError):
    """More tasks than the verifier accepts at once (RESOURCE_EXHAUSTED on the wire)."""


def _pool_event(name: str, value: int) -> None:
    if name == "busy":
        metrics.POOL_BUSY.labels("math").set(value)
    elif name == "queued":
        metrics.POOL_QUEUED.labels("math").set(value)
    elif name.startswith("restart:"):
        metrics.MATH_RESTARTS.labels(name.split(":", 1)[1]).inc()


class Verifier:
    """Scores tasks; `verify` returns results in order, `verify_stream` as they finish."""

    def __init__(self, settings: VerifierSettings) -> None:
        self.settings = settings
        self.math_pool = MathPool(settings.math, on_event=_pool_event)
        self.sandbox = Sandbox(settings.sandbox)
        self._sandbox_slots = asyncio.Semaphore(settings.max_sandboxes)
        self._num_pending = 0
        self._num_sandboxes_waiting = 0
        self._num_sandboxes_busy = 0

    def start(self) -> None:
        """Start the math worker processes."""
        self.math_pool.start()
        metrics.POOL_CAPACITY.labels("math").set(self.settings.math.num_processes)
        metrics.POOL_CAPACITY.labels("sandbox").set(self.settings.max_sandboxes)
        metrics.SANDBOX_ENABLED.set(1 if self.settings.sandbox.is_isolated else 0)

    async def close(self) -> None:
        await self.math_pool.close()

    async def __aenter__(self) -> Verifier:
        self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def admit(self, num_tasks: int) -> None:
        """Raise Overloaded unless `num_tasks` more tasks fit under max_pending_tasks."""
        if self._num_pending + num_tasks > self.settings.max_pending_tasks:
            raise Overloaded(
                f"{self._num_pending} tasks pending, {num_tasks} more would pass the limit of "
                f"{self.settings.max_pending_tasks}; retry with backoff or split the request"
            )

    async def verify(self, tasks: Sequence[Task]) -> list[Result]:
        """Score every task; results in request order."""
        self.admit(len(tasks))
        return list(await asyncio.gather(*(self.score(i, t) for i, t in enumerate(tasks))))

    async def verify_stream(self, tasks: Sequence[Task]) -> AsyncIterator[Result]:
        """Score every task; yield each result as soon as it is ready."""
        self.admit(len(tasks))
        pending = {asyncio.ensure_future(self.score(i, t)) for i, t in enumerate(tasks)}
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        finally:
            for fut in pending:
                fut.cancel()

    async def score(self, index: int, task: Task) -> Result:
        """Score one task (never raises for bad answers: the verdict says what happened)."""
        kind = "math" if isinstance(task.kind, MathTask) else "code"
        self._num_pending += 1
        metrics.PENDING_TASKS.set(self._num_pending)
        start = time.perf_counter()
        try:
            if isinstance(task.kind, MathTask):
                result = await self._score_math(index, task, task.kind, start)
            else:
                result = await self._score_code(index, task, task.kind, start)
        finally:
            self._num_pending -= 1
            metrics.PENDING_TASKS.set(self._num_pending)
        metrics.VERDICTS.labels(kind, result.verdict.name.lower()).inc()
        metrics.TASK_SECONDS.labels(kind).observe(result.elapsed_s)
        metrics.QUEUE_SECONDS.labels(kind).observe(result.queue_s)
        return result

    async def _score_math(self, index: int, task: Task, math: MathTask, start: float) -> Result:
        outcome = await self.math_pool.check(task.response, math.references)
        elapsed_s = time.perf_counter() - start
        return Result(
            index=index,
            task_id=task.task_id,
            reward=1.0 if outcome.correct else 0.0,
            verdict=outcome.verdict,
            reason=outcome.reason,
            extracted_answer=outcome.answer,
            queue_s=max(0.0, elapsed_s - outcome.elapsed_s),
            elapsed_s=elapsed_s,
        )

    def limits_for(self, code: CodeTask) -> Limits:
        """The task's limits: its own time and memory limits where given, the defaults otherwise."""
        limits = self.settings.limits
        if code.time_limit_s is not None:
            limits = replace(limits, time_limit_s=code.time_limit_s)
        if code.memory_limit_bytes is not None:
            limits = replace(limits, memory_bytes=code.memory_limit_bytes)
        return limits

    async def _score_code(self, index: int, task: Task, code: CodeTask, start: float) -> Result:
        self._num_sandboxes_waiting += 1
        metrics.POOL_QUEUED.labels("sandbox").set(self._num_sandboxes_waiting)
        async with self._sandbox_slots:
            self._num_sandboxes_waiting -= 1
            self._num_sandboxes_busy += 1
            metrics.POOL_QUEUED.labels("sandbox").set(self._num_sandboxes_waiting)
            metrics.POOL_BUSY.labels("sandbox").set(self._num_sandboxes_busy)
            queue_s = time.perf_counter() - start
            try:
                score = await score_code(code, task.response, self.sandbox, self.limits_for(code))
            finally:
                self._num_sandboxes_busy -= 1
                metrics.POOL_BUSY.labels("sandbox").set(self._num_sandboxes_busy)
        for t in score.tests:
            if t.status != TestStatus.UNSPECIFIED:
                metrics.TESTS.labels(code.language, t.status.name.lower()).inc()
        if score.has_sandbox_error:
            metrics.SANDBOX_ERRORS.labels("start").inc()
        if any(t.detail.startswith("the sandbox runner stopped") for t in score.tests):
            metrics.SANDBOX_ERRORS.labels("runner_stopped").inc()
        return Result(
            index=index,
            task_id=task.task_id,
            reward=score.reward,
            verdict=score.verdict if score.verdict is not None else Verdict.ERROR,
            reason=score.reason,
            extracted_answer=score.code,
            tests=score.tests,
            queue_s=queue_s,
            elapsed_s=time.perf_counter() - start,
        )
