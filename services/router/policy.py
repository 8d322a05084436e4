"""Routing policies behind one interface: round_robin, least_load, power_of_two, cache_aware."""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from services.router import metrics
from services.router.domain import WorkerLoad
from services.router.prefix_index import PrefixIndex, block_keys


@dataclass(slots=True)
class RouteRequest:
    """What a policy may look at: the prompt tokens, how many samples will run, and a group key."""

    input_ids: Sequence[int]
    num_samples: int = 1
    group_key: str | None = None  # samples of one prompt share it, so they share a prefix cache
    keys: list[int] | None = field(default=None)  # block keys, computed once by cache_aware


class Routable(Protocol):
    """What a policy may know of a worker."""

    @property
    def url(self) -> str: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def load(self) -> WorkerLoad: ...


W = TypeVar("W", bound=Routable)


@dataclass(frozen=True, slots=True)
class Decision(Generic[W]):
    worker: W
    reason: str
    match_ratio: float = 0.0


def load_of(worker: Routable) -> float:
    """Samples the router has in flight on the worker, tie-broken by the worker's own queue and KV usage."""
    return worker.in_flight + 0.01 * worker.load.num_waiting + 0.001 * worker.load.token_usage


class Policy(Protocol):
    name: str

    def select(self, request: RouteRequest, workers: Sequence[W]) -> Decision[W]: ...

    def on_dispatch(self, request: RouteRequest, worker: Routable) -> None: ...

    def forget(self, url: str) -> None: ...


class _Base:
    name = "base"

    def on_dispatch(self, request: RouteRequest, worker: Routable) -> None:
        return None

    def forget(self, url: str) -> None:
        return None

    def decide(self, worker: W, reason: str, match_ratio: float = 0.0) -> Decision[W]:
        metrics.ROUTING_DECISIONS.labels(self.name, reason).inc()
        return Decision(worker, reason, match_ratio)


class RoundRobin(_Base):
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def select(self, request: RouteRequest, workers: Sequence[W]) -> Decision[W]:
        worker = workers[self._next % len(workers)]
        self._next += 1
        return self.decide(worker, "rotation")


class LeastLoad(_Base):
    name = "least_load"

    def select(self, request: RouteRequest, workers: Sequence[W]) -> Decision[W]:
        return self.decide(min(workers, key=load_of), "least_load")


class PowerOfTwo(_Base):
    name = "power_of_two"

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def select(self, request: RouteRequest, workers: Sequence[W]) -> Decision[W]:
        if len(workers) == 1:
            return self.decide(workers[0], "only")
        a, b = self._rng.sample(list(workers), 2)
        return self.decide(a if load_of(a) <= load_of(b) else b, "lower_of_two")


@dataclass(frozen=True, slots=True)
class CacheAwareConfig:
    """SMG's defaults: route by prefix unless loads are imbalanced by both an absolute and a relative gap."""

    cache_threshold: float = 0.3
    balance_abs_threshold: float = 32
    balance_rel_threshold: float = 1.5
    block_tokens: int = 16
    max_blocks_per_worker: int = 1 << 18
    max_groups: int = 100_000
    pending_s: float = 5.0  # with KV events: this router's dispatches count for 5-10 s, until events cover them


class CacheTruth(Protocol):
    """The workers' own cache state (services/router/kv_events.KvEventIndex, fed by their KV events):
    leading prompt tokens cached, for the workers it has events of (others absent)."""

    def match(self, input_ids: Sequence[int], workers: Sequence[str]) -> dict[str, int]: ...


class CacheAware(_Base):
    name = "cache_aware"

    def __init__(self, config: CacheAwareConfig | None = None, truth: CacheTruth | None = None) -> None:
        self.config = config or CacheAwareConfig()
        # Where a worker publishes KV events they replace this router's guess, except for what it sent in
        # the last pending_s..2*pending_s: a prompt dispatched but not yet prefilled has no event yet (a
        # rollout batch routes all its requests before the first prefill ends).
        self.truth = truth
        self.index = PrefixIndex(self.config.block_tokens, self.config.max_blocks_per_worker)
        self._pending = (self._new_index(), self._new_index())  # this window's dispatches, the last window's
        self._pending_since = time.monotonic()
        self._groups: OrderedDict[str, str] = OrderedDict()  # group key -> worker url

    def _new_index(self) -> PrefixIndex:
        return PrefixIndex(self.config.block_tokens, self.config.max_blocks_per_worker)

    def _recent(self) -> tuple[PrefixIndex, PrefixIndex]:
        now = time.monotonic()
        if now - self._pending_since >= self.config.pending_s:
            stale = now - self._pending_since >= 2 * self.config.pending_s
            self._pending = (self._new_index(), self._new_index() if stale else self._pending[0])
            self._pending_since = now
        return self._pending

    def _imbalanced(self, workers: Sequence[Routable]) -> bool:
        loads = [load_of(w) for w in workers]
        lo, hi = min(loads), max(loads)
        return hi - lo > self.config.balance_abs_threshold and hi > self.config.balance_rel_threshold * lo

    def select(self, request: RouteRequest, workers: Sequence[W]) -> Decision[W]:
        if len(workers) == 1:
            return self.decide(workers[0], "only")
        if self._imbalanced(workers):
            return self.decide(min(workers, key=load_of), "imbalanced")
        if request.group_key is not None and (url := self._groups.get(request.group_key)):
            for worker in workers:
                if worker.url == url:
                    return self.decide(worker, "group")
        request.keys = (
            request.keys if request.keys is not None else block_keys(request.input_ids, self.config.block_tokens)
        )
        urls = [w.url for w in workers]
        matched = {url: d * self.config.block_tokens for url, d in self.index.match(request.keys, urls).items()}
        reported: dict[str, int] = {}
        if self.truth is not None:
            reported = self.truth.match(request.input_ids, urls)
            if reported:
                current, last = self._recent()
                now, before = current.match(request.keys, urls), last.match(request.keys, urls)
                for url, tokens in reported.items():
                    matched[url] = max(tokens, self.config.block_tokens * max(now[url], before[url]))
        # On equal matches a worker's own report beats this router's recent dispatches.
        best = max(workers, key=lambda w: (matched[w.url], reported.get(w.url, -1) >= matched[w.url], -load_of(w)))
        ratio = matched[best.url] / max(1, len(request.input_ids))
        metrics.PREFIX_MATCH.observe(ratio)
        if ratio >= self.config.cache_threshold:
            return self.decide(best, "prefix_hit", ratio)
        return self.decide(min(workers, key=load_of), "prefix_miss", ratio)

    def on_dispatch(self, request: RouteRequest, worker: Routable) -> None:
        if request.keys is None:
            request.keys = block_keys(request.input_ids, self.config.block_tokens)
        self.index.insert(worker.url, request.keys)
        if self.truth is not None:
            self._recent()[0].insert(worker.url, request.keys)
        if request.group_key is not None:
            self._groups[request.group_key] = worker.url
            self._groups.move_to_end(request.group_key)
            if len(self._groups) > self.config.max_groups:
                self._groups.popitem(last=False)

    def forget(self, url: str) -> None:
        self.index.forget(url)
        for pending in self._pending:
            pending.forget(url)
        for key in [k for k, v in self._groups.items() if v == url]:
            del self._groups[key]


POLICIES: dict[str, Callable[[], Policy]] = {
    "round_robin": RoundRobin,
    "least_load": LeastLoad,
    "power_of_two": PowerOfTwo,
    "cache_aware": CacheAware,
}


def make_policy(name: str, truth: CacheTruth | None = None) -> Policy:
    """`truth`: the workers' KV events (cache_aware only)."""
    if name not in POLICIES:
        raise ValueError(f"--policy: unknown policy {name!r}; choose from {', '.join(POLICIES)}")
    if name == CacheAware.name:
        return CacheAware(truth=truth)
    return POLICIES[name]()
