"""Dynamic sampling (MiMo §3.3–3.4, DAPO): a rollout that needs `target_valid_groups` groups WITH reward
variance, drawn in order from a larger prompt source.

- Zero-variance groups (all right, all wrong) are reported (GroupFinished.zero_variance) and not counted.
- Launches are demand-driven: a prompt starts only while the valid groups done plus those the active groups are
  expected to give (each active group's chance of variance, from the problem's pass rate when a dataset knows it,
  else from this rollout's valid share so far) fall short of `oversampling` x the target; `max_prompts_launched`
  caps the over-sampling in all.
- Launch-order early termination (MiMo's rule): the batch is the first `target` valid groups in LAUNCH order; the
  rollout aborts what is still running only once that batch is complete AND every group launched before its last
  member has finished, so a long response launched early is never dropped for a short one launched later.
- Synchronous mode is naive dynamic sampling: batch, wait for its last sample, score it, repeat until full.

The old policies (no target, FIFO `target_prompts`) stay in `rollout.RolloutRun`; `make_run` picks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from services.router.domain import (
    BatchReport,
    DynamicSampling,
    GroupFinished,
    RewardTiming,
    RolloutMode,
    RolloutPrompt,
    RolloutSpec,
)
from services.router.pipeline import Pipeline
from services.router.rollout import DEFAULT_MAX_SAMPLES_IN_FLIGHT, PromptState, RolloutRun, Scorer


class PromptSource(Protocol):
    """Prompts in launch order; `pass_rate` is what the source knows of a problem (None: nothing)."""

    def draw(self, index: int) -> RolloutPrompt | None: ...

    def pass_rate(self, prompt_id: str) -> float | None: ...

    def record(self, prompt_id: str, pass_rate: float) -> None: ...


@dataclass(slots=True)
class ListSource:
    """The request's own prompts, in order."""

    prompts: tuple[RolloutPrompt, ...]

    def draw(self, index: int) -> RolloutPrompt | None:
        return self.prompts[index] if index < len(self.prompts) else None

    def pass_rate(self, prompt_id: str) -> float | None:
        return None

    def record(self, prompt_id: str, pass_rate: float) -> None:
        pass


def chance_of_variance(pass_rate: float, n: int) -> float:
    """P(a group of n samples is neither all right nor all wrong) for a problem with this pass rate."""
    return 0.0 if n < 2 else max(0.0, 1.0 - pass_rate**n - (1.0 - pass_rate) ** n)


@dataclass(slots=True)
class LaunchBook:
    """Groups in launch order, which have finished and which had reward variance; MiMo's selection."""

    target: int
    order: list[int] = field(default_factory=list)
    valid: dict[int, bool] = field(default_factory=dict)  # finished groups: index -> has variance

    def launched(self, index: int) -> None:
        self.order.append(index)

    def finished(self, index: int, has_variance: bool) -> None:
        self.valid[index] = has_variance

    @property
    def num_valid(self) -> int:
        return sum(self.valid.values())

    def active(self) -> list[int]:
        return [i for i in self.order if i not in self.valid]

    def _walk(self) -> Iterator[int | None]:
        """Valid groups in launch order; None at the first group still running."""
        for i in self.order:
            if i not in self.valid:
                yield None
                return
            if self.valid[i]:
                yield i

    def selection(self) -> list[int] | None:
        """The first `target` valid groups in launch order, once every group launched before the last of them
        has finished; None until then."""
        picked: list[int] = []
        for i in self._walk():
            if i is None:
                return None
            picked.append(i)
            if len(picked) == self.target:
                return picked
        return None

    def best_effort(self) -> list[int]:
        """What the batch holds when the rollout ends: the selection, or every valid group launched before the
        first unfinished one (target not met)."""
        picked: list[int] = []
        for i in self._walk():
            if i is None or len(picked) == self.target:
                break
            picked.append(i)
        return picked


class DynamicRun(RolloutRun):
    """A rollout with dynamic sampling over a prompt source (see the module docstring)."""

    def __init__(self, pipeline: Pipeline, scorer: Scorer, spec: RolloutSpec, source: PromptSource) -> None:
        super().__init__(pipeline, scorer, spec)
        assert spec.dynamic is not None
        self.dyn: DynamicSampling = spec.dynamic
        self.source = source
        self.states = []
        self.book = LaunchBook(self.dyn.target_valid_groups)
        self.zero_variance = 0
        self._wake = asyncio.Event()
        self._exhausted = False
        self._group_tokens: dict[int, int] = {}

    # --- the prompt source --------------------------------------------------------------------------------------
    def _draw(self) -> PromptState | None:
        cap = self.dyn.max_prompts_launched
        if self._exhausted or (cap and len(self.states) >= cap):
            return None
        prompt = self.source.draw(len(self.states))
        if prompt is None:
            self._exhausted = True
            return None
        state = PromptState(len(self.states), prompt, self.n)
        self.states.append(state)
        self.book.launched(state.index)
        return state

    def _can_draw(self) -> bool:
        cap = self.dyn.max_prompts_launched
        return not self._exhausted and not (cap and len(self.states) >= cap)

    def _on_group(self, state: PromptState, group: GroupFinished) -> None:
        has_variance = not group.zero_variance
        self.zero_variance += not has_variance
        self.book.finished(state.index, has_variance)
        self._group_tokens[state.index] = sum(len(s.token_ids) for s, _ in state.results.values())
        if group.scored and group.num_reward_errors == 0:
            self.source.record(state.prompt.prompt_id, group.pass_rate)
        self._wake.set()

    # --- demand-driven launching --------------------------------------------------------------------------------
    def _expected_valid(self, active: list[int]) -> float:
        finished = len(self.book.valid)
        share = (self.book.num_valid + 1) / (finished + 2)  # this rollout's valid share, Laplace-smoothed
        total = 0.0
        for i in active:
            known = self.source.pass_rate(self.states[i].prompt.prompt_id)
            total += share if known is None else chance_of_variance(known, self.n)
        return total

    def _needs_more(self) -> bool:
        if self.book.num_valid >= self.dyn.target_valid_groups:
            return False
        demand = self.dyn.oversampling * self.dyn.target_valid_groups
        return self.book.num_valid + self._expected_valid(self.book.active()) < demand

    async def _release(self, samples: int) -> None:
        self._in_flight -= samples
        self._wake.set()

    async def _wake_launcher(self) -> None:
        self._wake.set()

    async def _seamless(self) -> None:
        limit = max(self.n, self.spec.max_samples_in_flight or DEFAULT_MAX_SAMPLES_IN_FLIGHT)
        while not self._stopping:
            self._wake.clear()
            if self._needs_more() and self._can_draw():
                if self._in_flight + self.n <= limit:
                    state = self._draw()
                    if state is not None:
                        self._in_flight += self.n
                        self._spawn(self._generate(state))
                    continue
            elif not self.book.active() and not self._tasks:
                break  # nothing running and nothing more to launch
            await self._wake.wait()
        while self._tasks:
            await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)

    async def _generate(self, state: PromptState) -> None:
        if self.spec.reward_timing is RewardTiming.PER_SAMPLE:
            await self._generate_seamless(state)
            return
        try:  # continuous rollout without async rewards: the group holds its slots until it is scored
            gen = await self._prepare(state)
            self.clock.change(generating=1)
            try:
                await self.pipeline.run(gen)
            finally:
                self.clock.change(generating=-1)
            ended = time.monotonic()
            self.clock.change(verifying=1)
            try:
                rewards = await self.scorer.verify(
                    [self._reward_request(state, s) for s in gen.samples], self.spec.deadline
                )
            finally:
                self.clock.change(verifying=-1)
        finally:
            await self._release(self.n)
        for sample, reward in zip(gen.samples, rewards, strict=True):
            self._record(state, gen, sample, reward, ended)

    def _check_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.error = task.exception()
            self.cancel()
            return
        self._wake.set()
        if self.dyn.launch_order_termination and self.book.selection() is not None and self.book.active():
            self.early_terminated = True
            self.cancel(early=True)

    # --- naive dynamic sampling ---------------------------------------------------------------------------------
    async def _synchronous(self) -> None:
        batch_size = self.spec.sync_batch_prompts or self.dyn.target_valid_groups
        while self.book.num_valid < self.dyn.target_valid_groups:
            batch = [s for s in (self._draw() for _ in range(batch_size)) if s is not None]
            if not batch:
                break
            self.clock.change(generating=1)
            try:
                gens = await asyncio.gather(*(self._generate_only(s) for s in batch))
            finally:
                self.clock.change(generating=-1)
            pairs = [(s, gen, sample) for s, gen in zip(batch, gens, strict=True) for sample in gen.samples]
            ended = time.monotonic()
            self.clock.change(verifying=1)
            try:
                rewards = await self.scorer.verify(
                    [self._reward_request(s, sample) for s, _, sample in pairs], self.spec.deadline
                )
            finally:
                self.clock.change(verifying=-1)
            for (s, gen, sample), reward in zip(pairs, rewards, strict=True):
                self._record(s, gen, sample, reward, ended)

    # --- the end ------------------------------------------------------------------------------------------------
    def _batch_report(self) -> BatchReport:
        selected = self.book.best_effort()
        export = getattr(self.source, "export", None)
        touched = [s.prompt.prompt_id for s in self.states]
        return BatchReport(
            selected_prompt_ids=tuple(self.states[i].prompt.prompt_id for i in selected),
            num_groups_valid=self.book.num_valid,
            num_groups_zero_variance=self.zero_variance,
            num_groups_surplus=self.book.num_valid - len(selected),
            num_prompts_launched=len(self.states),
            completion_tokens=self.tokens,
            selected_completion_tokens=sum(self._group_tokens.get(i, 0) for i in selected),
            target_met=len(selected) == self.dyn.target_valid_groups,
            dataset_stats=tuple(export(touched)) if export is not None else (),
        )


def make_run(pipeline: Pipeline, scorer: Scorer, spec: RolloutSpec, source: PromptSource | None = None) -> RolloutRun:
    """Dynamic sampling when the spec asks for valid groups; the old policies otherwise."""
    if spec.dynamic is None:
        return RolloutRun(pipeline, scorer, spec)
    return DynamicRun(pipeline, scorer, spec, source or ListSource(spec.prompts))


__all__ = ["DynamicRun", "LaunchBook", "ListSource", "PromptSource", "RolloutMode", "chance_of_variance", "make_run"]
