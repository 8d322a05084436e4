"""Per-step choice between an MTP step (draft + 2-token verify) and a plain decode step, from measured costs.

An MTP step emits 1 + a tokens per sequence (a: the measured acceptance) and costs t_spec; a plain
step emits 1 and costs t_plain. Drafting pays when (1 + a) / t_spec >= 1 / t_plain. A step's cost is
its share of the engine's time from the previous decode step's results to its own, split over the steps
launched in that time (scheduling, forward, sampling, the per-token bookkeeping an MTP step does twice,
the engine loop; with overlapped decode, whichever of the host's and the GPU's work is longer), kept per
batch-size bucket, so the choice follows the batch size: a host-bound small model at a large batch stops
drafting, MiMo-7B at batch 1 keeps drafting.
(Timing each step from its own start instead missed the engine loop and, overlapped, read ~0.05 ms
for a step whose results were already on the host.)

A step's cost is the median of its mode's last `window` warm steps in that bucket: one slow sample
(another process, a collection, a first run of a shape) must not decide the mode for the rest of the
run, and the minimum would be as wrong the other way (an MTP step's time spreads wider than a plain
one's: measured on the H200, its minimum was half its typical cost); the window keeps the estimate
current as contexts grow. Each mode is measured `min_samples` times per bucket before the policy chooses, MTP
first, each in one run (only a steady run of one mode is timed: the steps just after a switch are not); after
that the other mode runs for `probe_steps` steps every `probe_every` choices, so its cost and the acceptance stay
fresh. Each probe that leaves the choice as it was multiplies the bucket's interval by `probe_backoff` (up to
`max_probe_every`), and a choice that flips resets it: a probe costs its steps in the worse mode plus two
switches, so where one mode is clearly better (the tiny model at batch 64 on the H200, chat prompts: plain
0.76 ms a token, MTP 0.98 ms for 1.76) it should be rare.
A prefill follows the choice too (`mtp.run_prefill`): where plain steps were chosen for the batch size a
prompt joins, its prefill skips the MTP layer.

A switch costs more than either mode's step (the first MTP step after plain ones has no draft: it verifies a
placeholder, and the plain steps left the MTP layer's KV stale at their positions; overlapped, a switch no longer
drains the step ahead: `EngineCore._launch`), so once a bucket has a mode it changes only when the other is
`switch_margin` better: when the two are even (the tiny model on the H200 at b16 at an acceptance of ~0.66: plain 0.52 ms, MTP
0.86) the choice does not flip on noise.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class SpecPolicy:
    mode: str = "auto"  # auto | always (bench: the MTP step's own cost) | never
    window: int = 16
    min_samples: int = 3
    probe_every: int = 32
    probe_steps: int = 3  # a probe's run of the other mode: its first step (the switch) is not timed
    probe_backoff: int = 4  # a probe that leaves the choice as it was multiplies the interval by this
    max_probe_every: int = 4096
    acceptance_drafts: int = 64  # the acceptance's moving average spans about this many recent drafts
    switch_margin: float = 0.05  # the other mode must emit this much more per second to be switched to
    acceptance: float = 1.0  # optimistic until measured: MTP runs first
    samples: dict[tuple[bool, int], deque[float]] = field(default_factory=dict)  # (is_spec, bucket) -> seconds
    current: dict[int, bool] = field(default_factory=dict)  # bucket -> the mode chosen last (probes aside)
    interval: dict[int, int] = field(default_factory=dict)  # bucket -> choices between its probes
    until_probe: dict[int, int] = field(default_factory=dict)  # bucket -> choices left before its next probe
    probing: dict[int, int] = field(default_factory=dict)  # bucket -> steps left in its probe
    num_plain_steps: int = 0
    num_spec_steps: int = 0

    def cost(self, is_spec: bool, bucket: int) -> float | None:
        """The mode's step cost in this bucket (seconds), None until measured."""
        recent = self.samples.get((is_spec, bucket))
        return statistics.median(recent) if recent else None

    def should_draft(self, bucket: int) -> bool:
        choice = self.mode == "always" if self.mode != "auto" else self._choose(bucket)
        self.num_spec_steps += int(choice)
        self.num_plain_steps += int(not choice)
        return choice

    def expects_draft(self, bucket: int) -> bool:
        """Whether steps in this bucket draft, as chosen last (probes aside; MTP until measured)."""
        return self.mode == "always" if self.mode != "auto" else self.current.get(bucket, True)

    def _choose(self, bucket: int) -> bool:
        num_spec = len(self.samples.get((True, bucket), ()))
        if min(num_spec, len(self.samples.get((False, bucket), ()))) < self.min_samples:
            return num_spec < self.min_samples  # measure MTP, then plain
        if self.probing.get(bucket):
            self.probing[bucket] -= 1
            return not self.current[bucket]
        spec, plain = self.cost(True, bucket), self.cost(False, bucket)
        assert spec is not None and plain is not None
        gain = (1.0 + self.acceptance) * plain / spec  # MTP's tokens per second over plain's
        current = self.current.get(bucket)
        margin = 0.0 if current is None else self.switch_margin
        choice = gain >= 1.0 - margin if current else gain >= 1.0 + margin
        if choice != current:  # a new choice (or the first): probe again soon
            self.interval[bucket] = self.until_probe[bucket] = self.probe_every
        self.current[bucket] = choice
        self.until_probe[bucket] = self.until_probe.get(bucket, self.probe_every) - 1
        if self.until_probe[bucket] > 0:
            return choice
        self.probing[bucket] = self.probe_steps - 1
        longer = self.probe_backoff * self.interval.get(bucket, self.probe_every)
        self.interval[bucket] = self.until_probe[bucket] = min(longer, self.max_probe_every)
        return not choice

    def record(
        self, bucket: int, is_spec: bool, seconds: float | None, acceptance: float | None = None, num_drafts: int = 1
    ) -> None:
        """A warm step's cost (None: not timed); with MTP, also the fraction of its `num_drafts` drafts accepted.
        Each draft weighs the same in the acceptance: a step at batch 64 moves it as much as 64 steps at batch 1
        (weighted by step, one sequence's few rejected drafts in a row swung it enough to flip the choice)."""
        if seconds is not None:
            self.samples.setdefault((is_spec, bucket), deque(maxlen=self.window)).append(seconds)
        if acceptance is not None and num_drafts > 0:
            weight = 1.0 - (1.0 - 1.0 / self.acceptance_drafts) ** num_drafts
            self.acceptance += weight * (acceptance - self.acceptance)

    def summary(self) -> str:
        """One line: how often it drafted, and the costs it chose by."""
        costs = ", ".join(
            f"b{bucket} {'mtp' if is_spec else 'plain'} {statistics.median(v) * 1e3:.2f} ms"
            for (is_spec, bucket), v in sorted(self.samples.items(), key=lambda kv: (kv[0][1], kv[0][0]))
        )
        total = self.num_spec_steps + self.num_plain_steps
        return f"drafted {self.num_spec_steps} of {total} decode steps, acceptance {self.acceptance:.2f}; {costs}"
