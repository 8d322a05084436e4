"""Code rewards: pass rate, and MiMo's test-difficulty-driven strict and soft rewards.

MiMo-7B (arXiv 2505.07608) groups a problem's tests into difficulty levels 1..K (1 = easiest) with
level scores S_k. Strict: level k's score counts only when level k and every easier level pass
completely, R = Σ_k S_k · 1[levels 1..k all pass]. Soft: each level's score is split evenly over its
tests, R = Σ_k S_k · passed_k / |G_k|. The report does not publish S_k, so the default here is equal
weight per level present (S_k = 1/K); given weights are normalised over the levels present, so the
largest reward is always 1.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.verifier.domain import RewardMode


class RewardError(ValueError):
    """Level weights that cannot be used; `field` names the offending request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def level_scores(levels: Sequence[int], weights: Sequence[float] = ()) -> dict[int, float]:
    """S_k for each level present, normalised to sum to 1 (equal per level when `weights` is empty)."""
    present = sorted(set(levels))
    if not present:
        return {}
    if not weights:
        return {k: 1.0 / len(present) for k in present}
    if len(weights) < present[-1]:
        raise RewardError("level_weights", f"{len(weights)} weight(s) given but a test has level {present[-1]}")
    if any(w < 0 or w != w for w in weights):
        raise RewardError("level_weights", "weights must be non-negative numbers")
    total = sum(weights[k - 1] for k in present)
    if total <= 0:
        raise RewardError("level_weights", "the weights of the levels present sum to zero")
    return {k: weights[k - 1] / total for k in present}


def pass_rate(passed: Sequence[bool]) -> float:
    return sum(passed) / len(passed) if passed else 0.0


def strict_reward(levels: Sequence[int], passed: Sequence[bool], scores: dict[int, float]) -> float:
    """Σ_k S_k · 1[every test of levels 1..k passed]."""
    reward, ok_so_far = 0.0, True
    for k in sorted(scores):
        ok_so_far = ok_so_far and all(p for lv, p in zip(levels, passed, strict=True) if lv == k)
        if not ok_so_far:
            break
        reward += scores[k]
    return reward


def soft_reward(levels: Sequence[int], passed: Sequence[bool], scores: dict[int, float]) -> float:
    """Σ_k S_k · passed_k / |G_k|."""
    reward = 0.0
    for k, s_k in scores.items():
        group = [p for lv, p in zip(levels, passed, strict=True) if lv == k]
        reward += s_k * sum(group) / len(group)
    return reward


def reward(mode: RewardMode, levels: Sequence[int], passed: Sequence[bool], weights: Sequence[float] = ()) -> float:
    """The reward in `mode` (UNSPECIFIED means strict); always in [0, 1]."""
    if mode == RewardMode.PASS_RATE:
        return pass_rate(passed)
    scores = level_scores(levels, weights)
    if mode == RewardMode.SOFT:
        return min(1.0, soft_reward(levels, passed, scores))
    return min(1.0, strict_reward(levels, passed, scores))


def stops_on_failure(mode: RewardMode) -> bool:
    """Strict: once a test fails, no later test (tests run easiest level first) can add reward."""
    return mode in (RewardMode.STRICT, RewardMode.UNSPECIFIED)
