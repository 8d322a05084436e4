"""A per-worker circuit breaker: open after consecutive failures, half-open after a cool-down."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import IntEnum


class CircuitState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(slots=True)
class CircuitBreaker:
    """Closed → open after `failure_threshold` consecutive failures; open → half-open after `open_s`;
    half-open lets calls through and closes after `success_threshold` successes (one failure re-opens)."""

    failure_threshold: int = 5
    success_threshold: int = 2
    open_s: float = 5.0
    state: CircuitState = CircuitState.CLOSED
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    opened_at: float = field(default=0.0)

    def allows(self, now: float | None = None) -> bool:
        if self.state is CircuitState.OPEN and (now or time.monotonic()) - self.opened_at >= self.open_s:
            self.state = CircuitState.HALF_OPEN
            self.consecutive_successes = 0
        return self.state is not CircuitState.OPEN

    def record_success(self) -> None:
        self.consecutive_failures = 0
        if self.state is CircuitState.HALF_OPEN:
            self.consecutive_successes += 1
            if self.consecutive_successes >= self.success_threshold:
                self.state = CircuitState.CLOSED
        elif self.state is CircuitState.OPEN:
            self.state = CircuitState.HALF_OPEN
            self.consecutive_successes = 1

    def record_failure(self, now: float | None = None) -> None:
        self.consecutive_successes = 0
        self.consecutive_failures += 1
        if self.state is CircuitState.HALF_OPEN or self.consecutive_failures >= self.failure_threshold:
            self.state = CircuitState.OPEN
            self.opened_at = now or time.monotonic()
