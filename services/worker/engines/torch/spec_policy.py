"""Per-step choice between an MTP step (draft + 2-token verify) and a plain decode step, from measured costs.

An MTP step emits 1 + a tokens per sequence (a: the measured acceptance) and costs t_spec; a plain
step emits 1 and costs t_plain. Drafting pays when (1 + a) / t_spec >= 1 / t_plain. Both costs are
wall times of warm steps (no graph captured in them), kept per batch-size bucket as moving averages,
so the choice follows the batch size: a host-bound small model at a large batch stops drafting,
MiMo-7B at batch 1 keeps drafting. Every `probe_every` steps the other mode runs once, so a stale
cost or acceptance is re-measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class SpecPolicy:
    mode: str = "auto"  # auto | always (bench: the MTP step's own cost) | never
    smoothing: float = 0.2
    probe_every: int = 200
    acceptance: float = 1.0  # optimistic until measured: MTP runs first
    costs: dict[tuple[bool, int], float] = field(default_factory=dict)  # (is_spec, bucket) -> seconds
    num_choices: int = 0
    num_plain_steps: int = 0

    def should_draft(self, bucket: int) -> bool:
        if self.mode != "auto":
            return self.mode == "always"
        spec, plain = self.costs.get((True, bucket)), self.costs.get((False, bucket))
        if spec is None or plain is None:
            choice = spec is None  # measure MTP first, then plain
        else:
            self.num_choices += 1
            choice = (1.0 + self.acceptance) / spec >= 1.0 / plain
            if self.num_choices % self.probe_every == 0:
                choice = not choice
        self.num_plain_steps += int(not choice)
        return choice

    def record(self, bucket: int, is_spec: bool, seconds: float, acceptance: float | None = None) -> None:
        """A warm step's wall time; with MTP, also the fraction of drafts accepted in it."""
        key = (is_spec, bucket)
        old = self.costs.get(key)
        self.costs[key] = seconds if old is None else old + self.smoothing * (seconds - old)
        if acceptance is not None:
            self.acceptance += self.smoothing * (acceptance - self.acceptance)
