"""A closed-loop, simulated-time model of a pool of sim workers driven by the operator's scaling rule.

Fluid queueing model: each ready replica runs up to `slots` requests at once and finishes
`throughput_rps` requests per second when full (so one request takes slots / throughput seconds);
requests wait in one FIFO queue for a free slot; a request's time to first token is its wait plus
`prefill_s`. New replicas become ready `startup_s` after the decision that asked for them. The
autoscaler sees the worker metrics as Prometheus would: sampled every `scrape_s`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from operators.autoscaler.scaling import History, Observation, decide
from operators.autoscaler.spec import MetricKind, ScalingSpec


@dataclass(frozen=True, slots=True)
class WorkerModel:
    throughput_rps: float = 2.0  # requests finished per second by one full replica
    slots: int = 16  # concurrent requests per replica (batch / KV capacity)
    prefill_s: float = 0.3  # time to first token with no queue
    startup_s: float = 30.0  # decision to ready (image pull is cached; model load dominates)

    @property
    def service_s(self) -> float:
        return self.slots / self.throughput_rps


@dataclass(frozen=True, slots=True)
class RuleSetup:
    """One autoscaler under test: its rule, how often it runs, and how fresh its metrics are."""

    name: str
    spec: ScalingSpec
    interval_s: float
    scrape_s: float


@dataclass(frozen=True, slots=True)
class RunResult:
    decisions: tuple[tuple[float, int], ...]  # (time_s, replica delta)
    requests: float
    within_slo: float
    replica_s: float
    max_replicas: int

    @property
    def slo_share(self) -> float:
        return self.within_slo / self.requests if self.requests else 1.0

    @property
    def replica_hours(self) -> float:
        return self.replica_s / 3600.0


@dataclass(slots=True)
class PoolState:
    """Mutable state of the simulated pool (the simulator's own, never shared)."""

    model: WorkerModel
    slo_s: float
    ready: int
    starting: list[float] = field(default_factory=list)  # ready-at times of replicas starting up
    queue: deque[list[float]] = field(default_factory=deque)  # FIFO cohorts: [arrival_s, count]
    running: float = 0.0
    requests: float = 0.0
    within_slo: float = 0.0

    @property
    def provisioned(self) -> int:
        return self.ready + len(self.starting)

    @property
    def waiting(self) -> float:
        return sum(count for _, count in self.queue)

    def scale_to(self, replicas: int, now_s: float) -> None:
        while self.provisioned < replicas:
            self.starting.append(now_s + self.model.startup_s)
        while self.provisioned > replicas:
            if self.starting:
                self.starting.pop()  # cancel the newest start first
            else:
                self.ready -= 1  # its in-flight requests drain; it takes no new ones

    def step(self, now_s: float, dt_s: float, arrivals: float) -> None:
        newly_ready = [t for t in self.starting if t <= now_s]
        self.ready += len(newly_ready)
        self.starting = [t for t in self.starting if t > now_s]
        self.running -= min(self.running, self.running * dt_s / self.model.service_s)
        if arrivals > 0:
            self.queue.append([now_s, arrivals])
            self.requests += arrivals
        self._admit(now_s, max(0.0, self.ready * self.model.slots - self.running))

    def _admit(self, now_s: float, free: float) -> None:
        while self.queue and free > 1e-9:
            cohort = self.queue[0]
            taken = min(free, cohort[1])
            if now_s - cohort[0] + self.model.prefill_s <= self.slo_s:
                self.within_slo += taken
            self.running += taken
            free -= taken
            cohort[1] -= taken
            if cohort[1] <= 1e-9:
                self.queue.popleft()

    def metric(self, kind: MetricKind) -> float | None:
        """A worker metric as PromQL over the pool would return it (None when no worker reports)."""
        if self.ready == 0:
            return None
        if kind is MetricKind.WAITING_REQUESTS:
            return self.waiting
        if kind is MetricKind.KV_CACHE_USAGE:
            return min(1.0, self.running / (self.ready * self.model.slots))
        return None


RateFn = Callable[[float], float]


def simulate(
    setup: RuleSetup,
    rate_rps: RateFn,
    duration_s: float,
    *,
    model: WorkerModel,
    slo_s: float,
    seed: int,
    dt_s: float = 0.25,
) -> RunResult:
    """Replay the arrival rate through the pool under `setup`'s rule.

    The seed draws the Poisson arrivals and the phases of the scrape and of the timer, so that
    rounds see the load steps at different points of both cycles.
    """
    rng = np.random.default_rng(seed)
    start = _initial_replicas(setup.spec, rate_rps(0.0), model)
    pool = PoolState(model, slo_s, ready=start)
    history, desired = History(), start
    observed: tuple[float | None, ...] = tuple(None for _ in setup.spec.metrics)
    next_scrape, next_tick = rng.uniform(0, setup.scrape_s), rng.uniform(0, setup.interval_s)
    decisions: list[tuple[float, int]] = []
    replica_s, peak = 0.0, start
    for i in range(math.ceil(duration_s / dt_s)):
        now = i * dt_s
        pool.step(now, dt_s, float(rng.poisson(rate_rps(now) * dt_s)))
        if now >= next_scrape:
            observed = tuple(pool.metric(m.kind) for m in setup.spec.metrics)
            next_scrape += setup.scrape_s
        if now >= next_tick:
            decision = decide(setup.spec, Observation(desired, observed), history, now)
            history = decision.history
            if decision.delta:
                decisions.append((now, decision.delta))
                desired = decision.desired_replicas
                pool.scale_to(desired, now)
            next_tick += setup.interval_s
        replica_s += pool.provisioned * dt_s
        peak = max(peak, pool.provisioned)
    # Requests still queued at the end count as requests, not as served within the SLO.
    return RunResult(tuple(decisions), pool.requests, pool.within_slo, replica_s, peak)


def _initial_replicas(spec: ScalingSpec, rate_rps: float, model: WorkerModel) -> int:
    """Start both rules from the same, comfortably sized pool for the first arrival rate."""
    needed = math.ceil(rate_rps / (model.throughput_rps * 0.7))
    return max(spec.min_replicas, min(spec.max_replicas, needed))


def first_decision_after(result: RunResult, at_s: float, direction: int) -> float | None:
    """Seconds from `at_s` to the first decision moving in `direction` (+1 up, -1 down)."""
    for time_s, delta in result.decisions:
        if time_s >= at_s and delta * direction > 0:
            return time_s - at_s
    return None
