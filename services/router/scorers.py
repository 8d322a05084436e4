"""Open rewards: which scorer a rollout's samples go to.

- A rollout (or its dataset) may name an external scorer: any gRPC service implementing `mimo.v1.Verifier`'s
  Verify (a reward model, a rubric) at host:port. Every sample goes there; a prompt with no math or code task is
  sent with neither set (the response alone, task id "prompt_id/sample_index").
- Without one, math and code tasks go to the router's verifier, and a prompt with no reward task is sampled only:
  reward 0, VERDICT_UNSPECIFIED, reason saying so, and its group reports `scored = false`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from services.router.domain import Reward, RewardRequest, Verdict
from services.router.rewards import RewardClient
from services.router.rollout import Scorer

UNSCORED = Reward(0.0, Verdict.UNSPECIFIED, "sampling only: no reward task and no scorer")


@dataclass(slots=True)
class OpenScorer:
    """Math/code tasks to `verifier`, open prompts left unscored; or everything to `external`."""

    verifier: Scorer
    external: Scorer | None = None

    async def verify(self, requests: Sequence[RewardRequest], deadline: float | None = None) -> list[Reward]:
        if self.external is not None:
            return await self.external.verify(requests, deadline)
        tasks = [r for r in requests if r.task is not None]
        scored = iter(await self.verifier.verify(tasks, deadline) if tasks else [])
        return [next(scored) if r.task is not None else UNSCORED for r in requests]


@dataclass(slots=True)
class ScorerPool:
    """One client per external scorer target, opened on first use and closed with the router."""

    verifier: Scorer
    connect: Callable[[str], RewardClient] = RewardClient
    _clients: dict[str, RewardClient] = field(default_factory=dict)

    def for_target(self, target: str) -> OpenScorer:
        if not target:
            return OpenScorer(self.verifier)
        if target not in self._clients:
            self._clients[target] = self.connect(target)
        return OpenScorer(self.verifier, self._clients[target])

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.close() for c in clients))
