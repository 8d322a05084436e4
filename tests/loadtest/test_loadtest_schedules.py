"""Load schedules: how many users each shape holds over the run, and which flags it rejects."""

from __future__ import annotations

import pytest

from loadtest.schedules import Stage, spike, stage_at, steady, step


def users_over_time(stages: tuple[Stage, ...], run_time_s: float, every_s: float = 1.0) -> list[int | None]:
    times = [i * every_s for i in range(int(run_time_s / every_s) + 1)]
    return [None if (s := stage_at(stages, t)) is None else s.num_users for t in times]


def test_steady_holds_the_users_for_the_run_then_stops():
    assert users_over_time(steady(10, 5, 3), 3) == [10, 10, 10, None]


def test_step_climbs_to_the_peak_in_equal_steps():
    assert users_over_time(step(8, 2, 8, num_steps=4), 8, every_s=2) == [2, 4, 6, 8, None]


def test_step_never_has_a_step_without_a_new_user():
    stages = step(3, 1, 6, num_steps=10)
    assert [s.num_users for s in stages] == [1, 2, 3]
    assert stages[-1].end_s == 6


def test_spike_jumps_from_the_base_to_the_peak_at_once_and_back():
    stages = spike(20, 2, 10)
    assert users_over_time(stages, 10) == [5, 5, 5, 5, 20, 20, 20, 5, 5, 5, None]
    assert stages[1].spawn_rate >= 20  # the whole spike within a second, not at the ramp's 2 users/s


@pytest.mark.parametrize(
    "make,flag",
    [
        (lambda: steady(0, 1, 10), "--users"),
        (lambda: steady(1, 0, 10), "--spawn-rate"),
        (lambda: step(4, 1, 0), "--run-time"),
        (lambda: step(4, 1, 10, num_steps=0), "--steps"),
        (lambda: spike(4, 1, 10, base_users=5), "--spike-base-users"),
    ],
)
def test_bad_flags_are_named(make, flag):
    with pytest.raises(ValueError, match=flag):
        make()
