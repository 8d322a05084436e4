"""Prompt sources with memory: named datasets registered with the router (`--dataset NAME=FILE.jsonl`), each
keeping per-problem pass rates across rollouts, with MiMo's easy pool (§3.3.2).

- A problem whose last group passed at rate >= `easy_threshold` (1.0) moves to the easy pool; rollouts draw from
  that pool with probability `alpha` (0.1) and from the rest otherwise (dropping easy problems outright "introduces
  significant instability"). A problem leaves the pool when a later group falls below the threshold.
- Within one rollout a problem is drawn at most once; draws are uniform within the chosen pool.
- State lives in `<state dir>/<name>.state.json` (the chart mounts a volume there), written atomically at most
  once a second while rollouts record and at the end of every rollout, read back at start: it survives a router
  restart. Each rollout's RolloutFinished exports the state of the problems it touched.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.router.domain import InvalidRequest, ProblemStat, RolloutPrompt

STATE_VERSION = 1
SAVE_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class EasyPool:
    alpha: float = 0.1  # share of draws from the easy pool (when it holds any problem)
    easy_threshold: float = 1.0  # a group pass rate at or above this moves the problem there
    ema: float = 0.5  # weight of the newest group in the problem's pass rate

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1 or not 0 < self.easy_threshold <= 1 or not 0 < self.ema <= 1:
            raise ValueError(f"easy pool: alpha and ema must be in [0, 1], threshold in (0, 1]; got {self}")


@dataclass(slots=True)
class ProblemState:
    rollouts: int = 0
    pass_rate: float = 0.0
    last_pass_rate: float = 0.0
    easy: bool = False


@dataclass(slots=True)
class Dataset:
    name: str
    problems: tuple[RolloutPrompt, ...]
    pool: EasyPool = EasyPool()
    state_path: Path | None = None
    state: dict[str, ProblemState] = field(default_factory=dict)
    _saved_at: float = 0.0
    _dirty: bool = False
    _by_id: dict[str, RolloutPrompt] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = [p.prompt_id for p in self.problems]
        if not ids or len(set(ids)) != len(ids) or not all(ids):
            raise ValueError(f"dataset {self.name}: problems need unique, non-empty prompt ids")
        self._by_id = {p.prompt_id: p for p in self.problems}
        self.load()

    # --- state ----------------------------------------------------------------------------------------------
    def load(self) -> None:
        if self.state_path is None or not self.state_path.is_file():
            return
        data = json.loads(self.state_path.read_text())
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"{self.state_path}: state version {data.get('version')}, expected {STATE_VERSION}")
        self.state = {pid: ProblemState(**s) for pid, s in data["problems"].items() if pid in self._by_id}

    def save(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.state_path is None or not self._dirty or (not force and now - self._saved_at < SAVE_EVERY_S):
            return
        body = {
            "version": STATE_VERSION,
            "dataset": self.name,
            "problems": {k: vars_of(v) for k, v in self.state.items()},
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, sort_keys=True))
        os.replace(tmp, self.state_path)
        self._saved_at, self._dirty = now, False

    def record(self, prompt_id: str, pass_rate: float) -> None:
        s = self.state.setdefault(prompt_id, ProblemState())
        s.pass_rate = pass_rate if s.rollouts == 0 else (1 - self.pool.ema) * s.pass_rate + self.pool.ema * pass_rate
        s.rollouts += 1
        s.last_pass_rate = pass_rate
        s.easy = pass_rate >= self.pool.easy_threshold
        self._dirty = True
        self.save()

    def stat(self, prompt_id: str) -> ProblemStat:
        s = self.state.get(prompt_id, ProblemState())
        return ProblemStat(prompt_id, s.rollouts, s.pass_rate, s.last_pass_rate, s.easy)

    def is_easy(self, prompt_id: str) -> bool:
        s = self.state.get(prompt_id)
        return s is not None and s.easy

    # --- draws ----------------------------------------------------------------------------------------------
    def draw(self, rng: random.Random, exclude: set[str]) -> RolloutPrompt | None:
        easy = [p for p in self.problems if p.prompt_id not in exclude and self.is_easy(p.prompt_id)]
        rest = [p for p in self.problems if p.prompt_id not in exclude and not self.is_easy(p.prompt_id)]
        if not easy and not rest:
            return None
        pool = easy if easy and (not rest or rng.random() < self.pool.alpha) else rest
        return pool[rng.randrange(len(pool))]


def vars_of(s: ProblemState) -> dict[str, float | int | bool]:
    return {"rollouts": s.rollouts, "pass_rate": s.pass_rate, "last_pass_rate": s.last_pass_rate, "easy": s.easy}


@dataclass(slots=True)
class DatasetSource:
    """One rollout's draws from a dataset (a `sampling_policy.PromptSource`)."""

    dataset: Dataset
    rng: random.Random
    drawn: set[str] = field(default_factory=set)

    def draw(self, index: int) -> RolloutPrompt | None:
        problem = self.dataset.draw(self.rng, self.drawn)
        if problem is None:
            return None
        self.drawn.add(problem.prompt_id)
        return RolloutPrompt(index, problem.prompt_id, problem.prompt, problem.reward)

    def pass_rate(self, prompt_id: str) -> float | None:
        s = self.dataset.state.get(prompt_id)
        return None if s is None or s.rollouts == 0 else s.pass_rate

    def record(self, prompt_id: str, pass_rate: float) -> None:
        self.dataset.record(prompt_id, pass_rate)

    def export(self, prompt_ids: Iterable[str]) -> list[ProblemStat]:
        self.dataset.save(force=True)
        return [self.dataset.stat(p) for p in dict.fromkeys(prompt_ids)]


class DatasetRegistry:
    """The router's datasets by name."""

    def __init__(self, datasets: Sequence[Dataset] = ()) -> None:
        self._datasets = {d.name: d for d in datasets}

    def names(self) -> list[str]:
        return sorted(self._datasets)

    def get(self, name: str) -> Dataset:
        if name not in self._datasets:
            known = ", ".join(self.names()) or "none (start the router with --dataset NAME=FILE)"
            raise InvalidRequest("dataset", f"unknown dataset {name!r}; registered: {known}")
        return self._datasets[name]

    def source(self, name: str, seed: int | str | None) -> DatasetSource:
        return DatasetSource(self.get(name), random.Random(seed))

    def save_all(self) -> None:
        for d in self._datasets.values():
            d.save(force=True)


def state_file(state_dir: Path | None, name: str) -> Path | None:
    if state_dir is None:
        return None
    state_dir.mkdir(parents=True, exist_ok=True)
    return state_dir / f"{name}.state.json"
