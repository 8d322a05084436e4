"""MiMo's strict and soft rewards against hand-worked examples."""

from __future__ import annotations

import pytest

from services.verifier.domain import RewardMode
from services.verifier.rewards import RewardError, level_scores, reward, soft_reward, stops_on_failure, strict_reward

# Three levels: level 1 has 2 tests, level 2 has 3, level 3 has 1.
LEVELS = [1, 1, 2, 2, 2, 3]


def test_default_level_scores_are_equal_and_sum_to_one() -> None:
    assert level_scores(LEVELS) == pytest.approx({1: 1 / 3, 2: 1 / 3, 3: 1 / 3})


def test_given_weights_are_normalised_over_the_levels_present() -> None:
    # Weights for levels 1..4, but only levels 1 and 3 have tests: 1/(1+3) and 3/(1+3).
    assert level_scores([1, 3, 3], [1.0, 2.0, 3.0, 4.0]) == pytest.approx({1: 0.25, 3: 0.75})


@pytest.mark.parametrize(
    ("passed", "strict", "soft"),
    [
        # everything passes: both rewards are 1
        ([True] * 6, 1.0, 1.0),
        # level 1 fully, level 2 two of three, level 3 passes:
        # strict = S1 only (level 2 incomplete blocks levels 2 and 3) = 1/3
        # soft = 1/3·2/2 + 1/3·2/3 + 1/3·1/1 = 1/3 + 2/9 + 1/3 = 8/9
        ([True, True, True, True, False, True], 1 / 3, 8 / 9),
        # a level-1 failure: strict gets nothing even though harder levels pass
        # soft = 1/3·1/2 + 1/3·3/3 + 1/3·1 = 1/6 + 1/3 + 1/3 = 5/6
        ([False, True, True, True, True, True], 0.0, 5 / 6),
        # levels 1 and 2 pass, level 3 fails: strict = 2/3, soft = 2/3
        ([True, True, True, True, True, False], 2 / 3, 2 / 3),
        ([False] * 6, 0.0, 0.0),
    ],
)
def test_strict_and_soft_match_hand_worked_values(passed: list[bool], strict: float, soft: float) -> None:
    scores = level_scores(LEVELS)
    assert strict_reward(LEVELS, passed, scores) == pytest.approx(strict)
    assert soft_reward(LEVELS, passed, scores) == pytest.approx(soft)
    assert reward(RewardMode.STRICT, LEVELS, passed) == pytest.approx(strict)
    assert reward(RewardMode.UNSPECIFIED, LEVELS, passed) == pytest.approx(strict)
    assert reward(RewardMode.SOFT, LEVELS, passed) == pytest.approx(soft)


def test_weighted_strict_and_soft() -> None:
    # S = (1, 2, 3) → normalised (1/6, 2/6, 3/6); levels 1 and 2 pass fully, level 3 fails.
    passed = [True, True, True, True, True, False]
    assert reward(RewardMode.STRICT, LEVELS, passed, [1, 2, 3]) == pytest.approx(0.5)
    # Soft with level 2 at 1/3: 1/6 + 2/6·1/3 + 0 = 1/6 + 1/9 = 5/18.
    passed = [True, True, True, False, False, False]
    assert reward(RewardMode.SOFT, LEVELS, passed, [1, 2, 3]) == pytest.approx(5 / 18)


def test_pass_rate_ignores_levels() -> None:
    assert reward(RewardMode.PASS_RATE, LEVELS, [True, False, True, False, True, False]) == pytest.approx(0.5)


def test_levels_need_not_be_contiguous() -> None:
    # Levels 1 and 3 only; strict counts level 3 once level 1 passes.
    assert reward(RewardMode.STRICT, [1, 3], [True, True]) == pytest.approx(1.0)
    assert reward(RewardMode.STRICT, [1, 3], [True, False]) == pytest.approx(0.5)


@pytest.mark.parametrize("weights", [[1.0], [1.0, -1.0, 1.0], [0.0, 0.0, 0.0]])
def test_unusable_weights_name_the_field(weights: list[float]) -> None:
    with pytest.raises(RewardError, match="level_weights"):
        level_scores(LEVELS, weights)


def test_only_strict_stops_early() -> None:
    assert stops_on_failure(RewardMode.STRICT) and stops_on_failure(RewardMode.UNSPECIFIED)
    assert not stops_on_failure(RewardMode.SOFT) and not stops_on_failure(RewardMode.PASS_RATE)
