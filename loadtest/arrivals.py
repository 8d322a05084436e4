"""Open-loop arrival times: Poisson or constant at a target rate, seeded, independent of response times."""

from __future__ import annotations

import random
from typing import Literal

Process = Literal["poisson", "constant"]


def arrival_times(rate_per_s: float, duration_s: float, process: Process = "poisson", seed: int = 0) -> list[float]:
    """Send times (seconds from the start) of every request in [0, duration_s) at `rate_per_s` on average.

    Poisson: exponential gaps with mean 1/rate (memoryless, bursty like independent users); constant: 1/rate apart.
    """
    if not rate_per_s > 0:
        raise ValueError(f"--rates: a rate must be positive, got {rate_per_s}")
    if not duration_s > 0:
        raise ValueError(f"--duration-s must be positive, got {duration_s}")
    if process == "constant":
        return [i / rate_per_s for i in range(int(duration_s * rate_per_s))]
    if process != "poisson":
        raise ValueError(f"--arrivals: unknown process {process!r}; choose poisson or constant")
    rng = random.Random(seed)
    times, t = [], rng.expovariate(rate_per_s)
    while t < duration_s:
        times.append(t)
        t += rng.expovariate(rate_per_s)
    return times
