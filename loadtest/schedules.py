"""Load schedules as plain data: how many users, at what spawn rate, until when (steady, step, spike)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Stage:
    """Hold `num_users` users (spawning or stopping `spawn_rate` a second) until `end_s` after the start."""

    end_s: float
    num_users: int
    spawn_rate: float


def _validate(num_users: int, spawn_rate: float, run_time_s: float) -> None:
    if num_users < 1:
        raise ValueError(f"--users must be at least 1, got {num_users}")
    if not spawn_rate > 0:
        raise ValueError(f"--spawn-rate must be positive, got {spawn_rate}")
    if not run_time_s > 0:
        raise ValueError(f"--run-time must be positive, got {run_time_s}s")


def steady(num_users: int, spawn_rate: float, run_time_s: float) -> tuple[Stage, ...]:
    """Ramp to `num_users` and hold them for the whole run."""
    _validate(num_users, spawn_rate, run_time_s)
    return (Stage(run_time_s, num_users, spawn_rate),)


def step(num_users: int, spawn_rate: float, run_time_s: float, num_steps: int = 4) -> tuple[Stage, ...]:
    """`num_steps` equal stages, the users rising by about num_users/num_steps each time, up to `num_users`."""
    _validate(num_users, spawn_rate, run_time_s)
    if num_steps < 1:
        raise ValueError(f"--steps must be at least 1, got {num_steps}")
    num_steps = min(num_steps, num_users)  # every step adds at least one user
    return tuple(
        Stage(run_time_s * k / num_steps, math.ceil(num_users * k / num_steps), spawn_rate)
        for k in range(1, num_steps + 1)
    )


def spike(num_users: int, spawn_rate: float, run_time_s: float, base_users: int | None = None) -> tuple[Stage, ...]:
    """A base load (a quarter of the users) for 40% of the run, all users at once for 30%, the base again."""
    _validate(num_users, spawn_rate, run_time_s)
    base = max(1, num_users // 4) if base_users is None else base_users
    if not 1 <= base <= num_users:
        raise ValueError(f"--spike-base-users must be between 1 and --users ({num_users}), got {base}")
    burst_rate = max(spawn_rate, float(num_users))  # the whole spike arrives within a second
    return (
        Stage(0.4 * run_time_s, base, spawn_rate),
        Stage(0.7 * run_time_s, num_users, burst_rate),
        Stage(run_time_s, base, burst_rate),
    )


SCHEDULES: dict[str, Callable[..., tuple[Stage, ...]]] = {"steady": steady, "step": step, "spike": spike}


def stage_at(stages: tuple[Stage, ...], elapsed_s: float) -> Stage | None:
    """The stage in force `elapsed_s` after the start; None once the last one has ended."""
    return next((s for s in stages if elapsed_s < s.end_s), None)
