"""An optional tqdm bar over a rollout, counting finished samples (a no-op without tqdm)."""

from __future__ import annotations

import warnings
from typing import Any

from mimo_client.types import RolloutEvent, RolloutFinished, SampleFinished


class RolloutProgress:
    """Counts `SampleFinished` events against `num_samples`, with the running mean reward."""

    def __init__(self, is_enabled: bool, num_samples: int) -> None:
        self._bar: Any = None
        self._reward_sum = 0.0
        self._num_done = 0
        if not is_enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            warnings.warn("progress=True needs tqdm: pip install 'mimo-client[progress]'", stacklevel=3)
            return
        self._bar = tqdm(total=num_samples, unit="sample", desc="rollout")

    def update(self, event: RolloutEvent) -> None:
        if self._bar is None:
            return
        if isinstance(event, SampleFinished):
            self._num_done += 1
            self._reward_sum += event.reward
            self._bar.set_postfix(mean_reward=f"{self._reward_sum / self._num_done:.3f}", refresh=False)
            self._bar.update(1)
        elif isinstance(event, RolloutFinished) and event.num_samples_aborted:
            self._bar.set_postfix(aborted=event.num_samples_aborted, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
