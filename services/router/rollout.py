"""Seamless rollouts (MiMo's continuous rollout, async rewards, FIFO early termination) and the synchronous
baseline, streamed back as events."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.router import metrics_rollout as metrics
from services.router.domain import (
    RL_DEFAULTS,
    BatchReport,
    FinishReason,
    GenerationRequest,
    GroupFinished,
    Reward,
    RewardRequest,
    RolloutEvent,
    RolloutFinished,
    RolloutMode,
    RolloutPrompt,
    RolloutSpec,
    SampleFinished,
    Usage,
    Verdict,
)
from services.router.outputs import Sample
from services.router.pipeline import Generation, Pipeline

DEFAULT_MAX_SAMPLES_IN_FLIGHT = 256
ABORTED = Reward(0.0, Verdict.UNSPECIFIED, "aborted: partial output, not scored")


class Scorer(Protocol):
    """Anything that scores responses the way `mimo.v1.Verifier.Verify` does (rewards.RewardClient)."""

    async def verify(self, requests: Sequence[RewardRequest], deadline: float | None = None) -> list[Reward]: ...


@dataclass(slots=True)
class PromptState:
    index: int
    prompt: RolloutPrompt
    n: int  # its samples: the rollout's samples_per_prompt, or 1 when it resumes a partial sample
    results: dict[int, tuple[Sample, Reward]] = field(default_factory=dict)


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


class RolloutRun:
    """One Rollout call: runs generation and rewards, puts events on a queue."""

    def __init__(self, pipeline: Pipeline, scorer: Scorer, spec: RolloutSpec) -> None:
        self.pipeline, self.scorer, self.spec = pipeline, scorer, spec
        self.n = spec.samples_per_prompt
        self.states = [PromptState(p.index, p, 1 if p.resume else self.n) for p in spec.prompts]
        self.events: asyncio.Queue[RolloutEvent] = asyncio.Queue()
        self.clock = Clock()
        self.started = time.monotonic()
        self.finished_prompts: list[int] = []
        self.tokens = 0
        self.aborted_samples = 0
        self.reward_errors = 0
        self.early_terminated = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._live: dict[str, tuple[Generation, asyncio.Task[object]]] = {}  # prepared generations, by worker id
        self._helpers: set[asyncio.Task[None]] = set()
        self._capacity = asyncio.Condition()
        self._in_flight = 0
        self._stopping = False
        self.error: BaseException | None = None

    @property
    def target(self) -> int:
        return self.spec.target_prompts or len(self.states)

    def _request(self, state: PromptState) -> GenerationRequest:
        return GenerationRequest(
            method="Rollout",
            prompt=state.prompt.prompt,
            sampling=self.spec.sampling,
            n=state.n,
            return_logprobs=True,  # training-grade samples: the sampling policy's logprobs
            stream=False,  # the worker still sends each sample's `complete` as it ends; no per-token messages
            defaults=RL_DEFAULTS,
            group_key=f"{self.spec.rollout_id}/{state.index}",
            deadline=self.spec.deadline,
        )

    async def _prepare(self, state: PromptState) -> Generation:
        gen = await self.pipeline.prepare(self._request(state), resume=state.prompt.resume)
        task = asyncio.current_task()
        if task is not None:
            self._live[gen.worker_request.request_id] = (gen, task)
        return gen

    def _reward_request(self, state: PromptState, sample: Sample) -> RewardRequest:
        return RewardRequest(f"{state.prompt.prompt_id}/{sample.index}", sample.answer, state.prompt.reward)

    def _record(self, state: PromptState, gen: Generation, sample: Sample, reward: Reward, ended: float) -> None:
        """Emit the sample's event, and the group's when it is the last; count finished prompts. An aborted
        sample (a weight update's abort) comes back with its partial tokens, unscored and out of the statistics."""
        now = time.monotonic()
        if sample.finish is FinishReason.ABORT:
            reward = ABORTED
        resume = state.prompt.resume
        state.results[sample.index] = (sample, reward)
        self.tokens += len(sample.token_ids)
        metrics.observe_sample(reward.reward, now - ended)
        self.events.put_nowait(
            SampleFinished(
                prompt_index=state.index,
                prompt_id=state.prompt.prompt_id,
                sample_index=resume.sample_index if resume else sample.index,
                text=sample.answer,
                token_ids=tuple(sample.token_ids),
                finish_reason=sample.finish,
                reward=reward,
                generation_s=ended - gen.request.arrived,
                reward_wait_s=now - ended,
                usage=Usage(prompt_tokens=len(gen.input_ids), completion_tokens=len(sample.token_ids)),
                prompt_token_ids=tuple(gen.input_ids[: len(gen.input_ids) - gen.resumed]),
                logprobs=() if resume and not resume.logprobs else tuple(lp.logprob for lp in sample.logprobs),
                weight_version=sample.weight_version,
                num_resumed_tokens=sample.resumed,
                resumed_weight_version=resume.weight_version if resume else "",
            )
        )
        if len(state.results) < state.n:
            return
        aborted = sum(1 for s, _ in state.results.values() if s.finish is FinishReason.ABORT)
        self.aborted_samples += aborted
        scored = [  # an outage is not a wrong answer, nor is a sample cut short
            r for s, r in state.results.values() if not r.is_error and s.finish is not FinishReason.ABORT
        ]
        errors = state.n - len(scored) - aborted
        self.reward_errors += errors
        correct = [r.verdict is Verdict.CORRECT for r in scored]
        pass_rate = sum(correct) / len(scored) if scored else 0.0
        if scored:
            metrics.observe_group(pass_rate)
        rewards = [r.reward for r in scored]
        group = GroupFinished(
            prompt_index=state.index,
            prompt_id=state.prompt.prompt_id,
            num_samples=state.n,
            pass_rate=pass_rate,
            mean_reward=sum(r.reward for r in scored) / len(scored) if scored else 0.0,
            all_correct=bool(scored) and all(correct),
            all_wrong=bool(scored) and not any(correct),
            num_reward_errors=errors,
            zero_variance=len(rewards) < 2 or max(rewards) - min(rewards) <= 1e-9,
            scored=any(r.verdict is not Verdict.UNSPECIFIED for r in scored),
            num_aborted=aborted,
        )
        self.events.put_nowait(group)
        if aborted:  # not finished: its aborted samples can be resumed (RolloutPrompt.resume)
            return
        self.finished_prompts.append(state.index)
        self._on_group(state, group)

    def _on_group(self, state: PromptState, group: GroupFinished) -> None:
        """A group's last reward is in (sampling_policy.DynamicRun counts valid groups here)."""

    # --- seamless -------------------------------------------------------------------------------------------
    async def _verify_one(self, state: PromptState, gen: Generation, sample: Sample) -> None:
        ended = time.monotonic()
        if sample.finish is FinishReason.ABORT:  # partial output: nothing to score
            self._record(state, gen, sample, ABORTED, ended)
            return
        self.clock.change(verifying=1)
        try:
            (reward,) = await self.scorer.verify([self._reward_request(state, sample)], self.spec.deadline)
        finally:
            self.clock.change(verifying=-1)
        self._record(state, gen, sample, reward, ended)

    async def _generate_seamless(self, state: PromptState) -> None:
        gen = await self._prepare(state)
        verifying: list[asyncio.Task[None]] = []
        self.clock.change(generating=1)
        try:
            async for delta in self.pipeline.stream(gen):
                if delta.finish_reason is not FinishReason.UNSPECIFIED:
                    await self._release(1)
                    verifying.append(asyncio.create_task(self._verify_one(state, gen, gen.samples[delta.index])))
        finally:
            self.clock.change(generating=-1)
            await self._release(state.n - len(verifying))
        await asyncio.gather(*verifying)

    async def _release(self, samples: int) -> None:
        async with self._capacity:
            self._in_flight -= samples
            self._capacity.notify_all()

    def _has_room(self, n: int, limit: int) -> bool:
        return self._stopping or self._in_flight + n <= limit

    async def _seamless(self) -> None:
        limit = max(self.n, self.spec.max_samples_in_flight or DEFAULT_MAX_SAMPLES_IN_FLIGHT)
        for state in self.states:
            async with self._capacity:
                await self._capacity.wait_for(functools.partial(self._has_room, state.n, limit))
                if self._stopping:
                    break
                self._in_flight += state.n
            self._spawn(self._generate_seamless(state))
        while self._tasks:
            await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)

    # --- synchronous baseline ---------------------------------------------------------------------------
    async def _generate_only(self, state: PromptState) -> Generation:
        return await self.pipeline.run(await self._prepare(state))

    async def _synchronous(self) -> None:
        batch_size = self.spec.sync_batch_prompts or len(self.states)
        for start in range(0, len(self.states), batch_size):
            if len(self.finished_prompts) >= self.target:
                break
            batch = self.states[start : start + batch_size]
            self.clock.change(generating=1)
            try:
                gens = await asyncio.gather(*(self._generate_only(s) for s in batch))
            finally:
                self.clock.change(generating=-1)
            pairs = [(s, gen, sample) for s, gen in zip(batch, gens, strict=True) for sample in gen.samples]
            ended = time.monotonic()
            self.clock.change(verifying=1)
            rewards = await self.scorer.verify(
                [self._reward_request(s, sample) for s, _, sample in pairs], self.spec.deadline
            )
            self.clock.change(verifying=-1)
            for (s, gen, sample), reward in zip(pairs, rewards, strict=True):
                self._record(s, gen, sample, reward, ended)
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
            self.cancel(early=True)

    def cancel(self, early: bool = False) -> None:
        """Stop launching prompts and cancel running ones (their worker requests are aborted). Early termination of
        a partial rollout instead ends them on their workers, so their samples come back aborted with their tokens."""
        self._stopping = True
        if early and self.spec.partial_rollout:
            self._spawn_helper(self._end_partial())
        else:
            for task in list(self._tasks):
                task.cancel()
        self._spawn_helper(self._wake_launcher())

    def _spawn_helper(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)

    async def _end_partial(self) -> None:
        for gen, task in list(self._live.values()):
            if all(s.is_done for s in gen.samples):
                continue
            if not await self.pipeline.abort(gen):
                task.cancel()  # not on a worker yet: nothing to keep

    async def _wake_launcher(self) -> None:
        async with self._capacity:
            self._capacity.notify_all()

    async def run(self) -> None:
        try:
            if self.spec.mode is RolloutMode.SYNCHRONOUS:
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
        self.events.put_nowait(
            RolloutFinished(
                num_prompts_finished=len(done),
                num_prompts_unfinished=len(unfinished),
                num_samples_finished=finished_samples,
                num_samples_aborted=sum(s.n - len(s.results) for s in unfinished) + self.aborted_samples,
                wall_s=wall_s,
                samples_per_s=finished_samples / wall_s if wall_s else 0.0,
                completion_tokens_per_s=self.tokens / wall_s if wall_s else 0.0,
                reward_wait_s=self.clock.reward_wait_s,
                early_terminated=self.early_terminated,
                unfinished_prompt_ids=tuple(s.prompt.prompt_id for s in unfinished),
                num_reward_errors=self.reward_errors,
                batch=self._batch_report(),
            )
        )

    def _batch_report(self) -> BatchReport:
        """Dynamic sampling's report (sampling_policy.DynamicRun); empty for the old policies."""
        return BatchReport()


async def stream_rollout(run: RolloutRun) -> AsyncIterator[RolloutEvent]:
    """Events while the run goes on; cancelling the consumer cancels the run (and aborts worker requests)."""
    runner = asyncio.create_task(run.run())
    try:
        while True:
            getter = asyncio.ensure_future(run.events.get())
            await asyncio.wait({getter, runner}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                event = getter.result()
                yield event
                if isinstance(event, RolloutFinished):
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
