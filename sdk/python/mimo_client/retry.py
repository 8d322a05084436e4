"""Retries with exponential backoff and jitter, only where a retry cannot repeat work the caller already saw."""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from mimo_client.errors import DeadlineExceeded, MimoError, ResourceExhausted


class Safety(enum.Enum):
    """How safe a call is to repeat."""

    IDEMPOTENT = "idempotent"  # tokenize, count, list_models, verify: any retryable code
    UNAVAILABLE_BEFORE_RESPONSE = "unavailable_before_response"  # generate, chat, streams, rollout


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`max_attempts` counts the first try; the n-th retry waits a random 50-100% of
    `min(max_backoff_s, initial_backoff_s * multiplier ** (n - 1))`, or longer when the server advised so."""

    max_attempts: int = 3
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    retryable_codes: frozenset[grpc.StatusCode] = field(
        default_factory=lambda: frozenset({grpc.StatusCode.UNAVAILABLE})
    )

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("need 0 <= initial_backoff_s <= max_backoff_s")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, got {self.multiplier}")

    def backoff_s(self, retry: int, rng: random.Random | None = None) -> float:
        """The wait before retry number `retry` (1-based), with jitter."""
        ceiling_s = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (retry - 1))
        return ceiling_s * (rng or random).uniform(0.5, 1.0)


NO_RETRY = RetryPolicy(max_attempts=1)


class Attempts:
    """One call's retry state: attempts made and the deadline shared by all of them.

    The sync and asyncio clients drive the same state; only their sleeping differs."""

    def __init__(
        self, policy: RetryPolicy, safety: Safety, timeout_s: float | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy
        self.safety = safety
        self.timeout_s = timeout_s
        self.num_attempts = 0
        self._clock = clock
        self._deadline = None if timeout_s is None else clock() + timeout_s

    def start(self) -> float | None:
        """Count a new attempt and return its timeout: what is left of the call's deadline."""
        self.num_attempts += 1
        if self._deadline is None:
            return None
        left_s = self._deadline - self._clock()
        if left_s <= 0:
            raise DeadlineExceeded(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"deadline of {self.timeout_s}s passed before attempt {self.num_attempts}",
            )
        return left_s

    def retry_delay_s(self, error: MimoError, *, received: bool) -> float | None:
        """How long to wait before trying again, or None when `error` must reach the caller."""
        if not self._may_retry(error, received):
            return None
        delay_s = self.policy.backoff_s(self.num_attempts)
        if isinstance(error, ResourceExhausted) and error.retry_after_s is not None:
            delay_s = max(delay_s, error.retry_after_s)
        if self._deadline is not None and self._clock() + delay_s >= self._deadline:
            return None  # no time left for another attempt: the caller gets the real error
        return delay_s

    def _may_retry(self, error: MimoError, received: bool) -> bool:
        if received or self.num_attempts >= self.policy.max_attempts:
            return False  # never repeat a stream the caller has already seen part of
        if error.code not in self.policy.retryable_codes:
            return False
        return self.safety is Safety.IDEMPOTENT or error.code == grpc.StatusCode.UNAVAILABLE
