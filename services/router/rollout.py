"""Seamless rollouts (MiMo's continuous rollout, async rewards, FIFO early termination) and the synchronous
baseline, streamed back as events."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from mimo_client.v1 import common_pb2, rollout_pb2, verifier_pb2

from services.router import metrics_rollout as metrics
from services.router.gateway import Gateway, Job
from services.router.outputs import Sample
from services.router.requests import (
    RL_DEFAULTS,
    InvalidRequest,
    validate_common,
    validate_input_ids,
    validate_messages,
    validate_sampling,
)
from services.router.rewards import RewardClient

DEFAULT_MAX_SAMPLES_IN_FLIGHT = 256


@dataclass(slots=True)
class PromptState:
    index: int
    prompt: rollout_pb2.RolloutPrompt
    results: dict[int, tuple[Sample, verifier_pb2.VerifyResult]] = field(default_factory=dict)


@dataclass(slots=True)
class Clock:
    """Integrates the time when no sample is generating but rewards are pending."""

    generating: int = 0
    verifying: int = 0
    reward_wait_s: float = 0.0
    _since: float = field(default_factory=time.monotonic)

    def change(self, generating: int = 0, verifying: int = 0) -> None:
        now = time.monotonic()
        if self.generating == 0 and self.verifying > 0:
            self.reward_wait_s += now - self._since
        self._since = now
        self.generating += generating
        self.verifying += verifying


def validate_rollout(request: rollout_pb2.RolloutRequest, vocab_size: int) -> int:
    """Every check that needs no worker, before anything starts; returns samples per prompt."""
    if not request.prompts:
        raise InvalidRequest("prompts", "must not be empty")
    validate_sampling(request.sampling)
    n = validate_common(request.samples_per_prompt, 0, "samples_per_prompt")
    for i, p in enumerate(request.prompts):
        kind = p.WhichOneof("input")
        if kind is None:
            raise InvalidRequest(f"prompts[{i}].input", "set messages or token_ids")
        if kind == "messages":
            validate_messages(p.messages.messages)
        else:
            validate_input_ids(p.token_ids.ids, vocab_size, f"prompts[{i}].token_ids")
        if p.WhichOneof("reward") is None:
            raise InvalidRequest(f"prompts[{i}].reward", "set math or code")
    fifo = request.early_termination == rollout_pb2.EARLY_TERMINATION_POLICY_FIFO
    if fifo and not 0 < request.target_prompts <= len(request.prompts):
        raise InvalidRequest("target_prompts", f"FIFO early termination needs 1..{len(request.prompts)} target prompts")
    return n


class RolloutRun:
    """One Rollout call: runs generation and rewards, puts events on a queue."""

    def __init__(self, gateway: Gateway, rewards: RewardClient, request: rollout_pb2.RolloutRequest, n: int) -> None:
        self.gateway, self.rewards, self.request, self.n = gateway, rewards, request, n
        self.states = [PromptState(i, p) for i, p in enumerate(request.prompts)]
        self.events: asyncio.Queue[rollout_pb2.RolloutEvent] = asyncio.Queue()
        self.clock = Clock()
        self.started = time.monotonic()
        self.finished_prompts: list[int] = []
        self.tokens = 0
        self.aborted_samples = 0
        self.early_terminated = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._capacity = asyncio.Condition()
        self._in_flight = 0
        self._stopping = False
        self.error: BaseException | None = None

    @property
    def target(self) -> int:
        fifo = self.request.early_termination == rollout_pb2.EARLY_TERMINATION_POLICY_FIFO
        return self.request.target_prompts if fifo else len(self.states)

    def _emit(self, **event: object) -> None:
        self.events.put_nowait(
            rollout_pb2.RolloutEvent(
                rollout_id=self.request.rollout_id, weight_version=self.request.weight_version, **event
            )
        )

    async def _input_ids(self, state: PromptState) -> list[int]:
        if state.prompt.WhichOneof("input") == "token_ids":
            return list(state.prompt.token_ids.ids)
        return self.gateway.chat_ids(state.prompt.messages.messages)

    def _job(self, state: PromptState, ids: list[int]) -> Job:
        return Job(
            "Rollout",
            ids,
            self.request.sampling,
            self.n,
            stream=False,  # the worker still sends each sample's `complete` as it ends; no per-token messages
            defaults=RL_DEFAULTS,
            group_key=f"{self.request.rollout_id}/{state.index}",
        )

    def _task(self, state: PromptState, sample: Sample) -> verifier_pb2.VerifyTask:
        task = verifier_pb2.VerifyTask(
            task_id=f"{state.prompt.prompt_id}/{sample.index}", response="".join(sample.text)
        )
        if state.prompt.WhichOneof("reward") == "math":
            task.math.CopyFrom(state.prompt.math)
        else:
            task.code.CopyFrom(state.prompt.code)
        return task

    def _record(
        self, state: PromptState, job: Job, sample: Sample, result: verifier_pb2.VerifyResult, ended: float
    ) -> None:
        """Emit the sample's event, and the group's when it is the last; count finished prompts."""
        now = time.monotonic()
        state.results[sample.index] = (sample, result)
        self.tokens += len(sample.token_ids)
        metrics.observe_sample(result.reward, now - ended)
        self._emit(
            sample=rollout_pb2.SampleFinished(
                prompt_index=state.index,
                prompt_id=state.prompt.prompt_id,
                sample_index=sample.index,
                text="".join(sample.text),
                token_ids=sample.token_ids,
                finish_reason=sample.finish,
                reward=result.reward,
                verification=result,
                generation_s=ended - job.arrived,
                reward_wait_s=now - ended,
                usage=common_pb2.Usage(
                    prompt_tokens=len(job.input_ids),
                    completion_tokens=len(sample.token_ids),
                    total_tokens=len(job.input_ids) + len(sample.token_ids),
                ),
            )
        )
        if len(state.results) < self.n:
            return
        rewards = [r.reward for _, r in state.results.values()]
        correct = [r.verdict == verifier_pb2.VERDICT_CORRECT for _, r in state.results.values()]
        pass_rate = sum(correct) / self.n
        metrics.observe_group(pass_rate)
        self._emit(
            group=rollout_pb2.GroupFinished(
                prompt_index=state.index,
                prompt_id=state.prompt.prompt_id,
                num_samples=self.n,
                pass_rate=pass_rate,
                mean_reward=sum(rewards) / self.n,
                all_correct=all(correct),
                all_wrong=not any(correct),
            )
        )
        self.finished_prompts.append(state.index)

    # --- seamless -------------------------------------------------------------------------------------------
    async def _verify_one(self, state: PromptState, job: Job, sample: Sample) -> None:
        ended = time.monotonic()
        self.clock.change(verifying=1)
        try:
            (result,) = await self.rewards.verify([self._task(state, sample)])
        finally:
            self.clock.change(verifying=-1)
        self._record(state, job, sample, result, ended)

    async def _generate_seamless(self, state: PromptState) -> None:
        job = self._job(state, await self._input_ids(state))
        verifying: list[asyncio.Task[None]] = []
        self.clock.change(generating=1)
        try:
            async for delta in self.gateway.run(job):
                if delta.finish_reason != common_pb2.FINISH_REASON_UNSPECIFIED:
                    await self._release(1)
                    verifying.append(asyncio.create_task(self._verify_one(state, job, job.samples[delta.index])))
        finally:
            self.clock.change(generating=-1)
            await self._release(self.n - len(verifying))
        await asyncio.gather(*verifying)

    async def _release(self, samples: int) -> None:
        async with self._capacity:
            self._in_flight -= samples
            self._capacity.notify_all()

    async def _seamless(self) -> None:
        limit = max(self.n, self.request.max_samples_in_flight or DEFAULT_MAX_SAMPLES_IN_FLIGHT)
        for state in self.states:
            async with self._capacity:
                await self._capacity.wait_for(lambda: self._stopping or self._in_flight + self.n <= limit)
                if self._stopping:
                    break
                self._in_flight += self.n
            self._spawn(self._generate_seamless(state))
        while self._tasks:
            await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)

    # --- synchronous baseline ---------------------------------------------------------------------------
    async def _generate_only(self, state: PromptState) -> Job:
        job = self._job(state, await self._input_ids(state))
        async for _ in self.gateway.run(job):
            pass
        return job

    async def _synchronous(self) -> None:
        batch_size = self.request.sync_batch_prompts or len(self.states)
        for start in range(0, len(self.states), batch_size):
            if len(self.finished_prompts) >= self.target:
                break
            batch = self.states[start : start + batch_size]
            self.clock.change(generating=1)
            try:
                jobs = await asyncio.gather(*(self._generate_only(s) for s in batch))
            finally:
                self.clock.change(generating=-1)
            pairs = [(s, job, sample) for s, job in zip(batch, jobs, strict=True) for sample in job.samples]
            ended = time.monotonic()
            self.clock.change(verifying=1)
            results = await self.rewards.verify([self._task(s, sample) for s, _, sample in pairs])
            self.clock.change(verifying=-1)
            for (s, job, sample), result in zip(pairs, results, strict=True):
                self._record(s, job, sample, result, ended)
        self.early_terminated = len(self.finished_prompts) < len(self.states)

    # --- lifecycle ------------------------------------------------------------------------------------------
    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._check_done)

    def _check_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.error = task.exception()
            self.cancel()
        elif len(self.finished_prompts) >= self.target and len(self.finished_prompts) < len(self.states):
            self.early_terminated = True
            self.cancel()

    def cancel(self) -> None:
        """Stop launching prompts and cancel running ones (their worker requests are aborted)."""
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        asyncio.get_running_loop().create_task(self._wake_launcher())

    async def _wake_launcher(self) -> None:
        async with self._capacity:
            self._capacity.notify_all()

    async def run(self) -> None:
        try:
            if self.request.mode == rollout_pb2.ROLLOUT_MODE_SYNCHRONOUS:
                await self._synchronous()
            else:
                await self._seamless()
        finally:
            if self._tasks:
                self.cancel()
        if self.error is not None:
            raise self.error
        self._finish()

    def _finish(self) -> None:
        wall_s = time.monotonic() - self.started
        done = set(self.finished_prompts)
        unfinished = [s for s in self.states if s.index not in done]
        finished_samples = sum(len(s.results) for s in self.states if s.index in done)
        if self.early_terminated:
            metrics.EARLY_TERMINATIONS.inc()
        self._emit(
            finished=rollout_pb2.RolloutFinished(
                num_prompts_finished=len(done),
                num_prompts_unfinished=len(unfinished),
                num_samples_finished=finished_samples,
                num_samples_aborted=len(unfinished) * self.n - sum(len(s.results) for s in unfinished),
                wall_s=wall_s,
                samples_per_s=finished_samples / wall_s if wall_s else 0.0,
                completion_tokens_per_s=self.tokens / wall_s if wall_s else 0.0,
                reward_wait_s=self.clock.reward_wait_s,
                early_terminated=self.early_terminated,
                unfinished_prompt_ids=[s.prompt.prompt_id for s in unfinished],
            )
        )


async def stream_rollout(run: RolloutRun) -> AsyncIterator[rollout_pb2.RolloutEvent]:
    """Events while the run goes on; cancelling the consumer cancels the run (and aborts worker requests)."""
    runner = asyncio.create_task(run.run())
    try:
        while True:
            getter = asyncio.ensure_future(run.events.get())
            await asyncio.wait({getter, runner}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                event = getter.result()
                yield event
                if event.HasField("finished"):
                    break
                continue
            getter.cancel()
            while not run.events.empty():
                yield run.events.get_nowait()
            runner.result()  # raises the run's error
            break
    finally:
        if not runner.done():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
