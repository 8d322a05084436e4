"""Which run a Rollout call gets: its prompt source (the request's prompts or a registered dataset), its scorer
(the router's verifier, the rollout's or the dataset's external scorer) and its policy (sampling_policy.make_run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from services.router.datasets import Dataset, DatasetRegistry, EasyPool, state_file
from services.router.domain import RolloutPrompt, RolloutSpec
from services.router.pipeline import Pipeline
from services.router.rollout import RolloutRun
from services.router.sampling_policy import make_run
from services.router.scorers import ScorerPool


@dataclass(frozen=True, slots=True)
class DatasetFlag:
    """`--dataset NAME=FILE[,scorer=HOST:PORT][,alpha=A]`."""

    name: str
    path: Path
    scorer: str = ""
    alpha: float = 0.1


def parse_dataset_flag(value: str) -> DatasetFlag:
    name, sep, rest = value.partition("=")
    parts = rest.split(",")
    if not sep or not name or not parts[0]:
        raise ValueError(f"--dataset: expected NAME=FILE[,scorer=HOST:PORT][,alpha=A], got {value!r}")
    options = dict(p.partition("=")[::2] for p in parts[1:])
    unknown = set(options) - {"scorer", "alpha"}
    if unknown:
        raise ValueError(f"--dataset {name}: unknown option(s) {', '.join(sorted(unknown))}")
    try:
        alpha = float(options.get("alpha", "0.1"))
    except ValueError as e:
        raise ValueError(f"--dataset {name}: alpha must be a number") from e
    return DatasetFlag(name, Path(parts[0]), options.get("scorer", ""), alpha)


def load_dataset(flag: DatasetFlag, prompts: tuple[RolloutPrompt, ...], state_dir: Path | None) -> Dataset:
    return Dataset(flag.name, prompts, EasyPool(alpha=flag.alpha), state_file(state_dir, flag.name))


@dataclass(slots=True)
class RolloutRuns:
    scorers: ScorerPool
    datasets: DatasetRegistry = field(default_factory=DatasetRegistry)
    dataset_scorers: dict[str, str] = field(default_factory=dict)

    def build(self, pipeline: Pipeline, spec: RolloutSpec) -> RolloutRun:
        source = None
        target = spec.scorer
        if spec.dataset:
            seed = None if spec.sampling.seed is None else f"{spec.rollout_id}/{spec.sampling.seed}"
            source = self.datasets.source(spec.dataset, seed)
            target = target or self.dataset_scorers.get(spec.dataset, "")
        return make_run(pipeline, self.scorers.for_target(target), spec, source)

    async def close(self) -> None:
        self.datasets.save_all()
        await self.scorers.close()
