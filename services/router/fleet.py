"""The fleet's weight version (RL weight sync): one update at a time across every worker, rollouts that never mix
versions silently, and workers that join later brought to the fleet's version before they get traffic.

An update: new rollouts wait; running rollouts finish first (or, with `abort_running`, their in-flight samples end
marked aborted with their partial tokens); the pool's target version moves, so requests wait in the router for a
worker at the new version instead of failing; each worker is paused, updated, checked (it must report the version)
and continued. A worker that fails is held out of routing and named. When every worker refuses the checkpoint the
target moves back and the old weights keep serving. grpc-free: workers are reached through `WorkerConnection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from services.router import metrics
from services.router.domain import (
    Conflict,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidRequest,
    Unavailable,
    WorkerCallFailed,
)
from services.router.workers import Worker, WorkerPool

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 600.0
CHECK_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class WorkerUpdate:
    worker: str
    ok: bool
    weight_version: str  # what the worker reports now
    load_s: float = 0.0
    error: str = ""
    num_aborted: int = 0
    refused: bool = False  # the worker refused the checkpoint (INVALID_ARGUMENT), as opposed to failing


@dataclass(frozen=True, slots=True)
class FleetUpdate:
    weight_version: str
    workers: tuple[WorkerUpdate, ...]
    wall_s: float
    rollouts_waited: int

    @property
    def failed(self) -> tuple[WorkerUpdate, ...]:
        return tuple(w for w in self.workers if not w.ok)


@dataclass(frozen=True, slots=True)
class WorkerVersion:
    worker: str
    weight_version: str
    state: str
    routable: bool
    reason: str


@dataclass(frozen=True, slots=True)
class FleetVersions:
    weight_version: str
    model_path: str
    is_updating: bool
    workers: tuple[WorkerVersion, ...]


def version_at_least(have: str, want: str) -> bool:
    """Integer versions compare as numbers; any other label must be equal."""
    if have.isdigit() and want.isdigit():
        return int(have) >= int(want)
    return have == want


class Fleet:
    def __init__(self, pool: WorkerPool, catch_up_retry_s: float = 30.0) -> None:
        self.pool = pool
        self.model_path = ""
        self._lock = asyncio.Lock()
        self._updating_to = ""
        self._no_update = asyncio.Event()
        self._no_update.set()
        self._rollouts = 0
        self._rollouts_changed = asyncio.Condition()
        self._busy: set[str] = set()  # workers the fleet is updating now
        self._catch_ups: dict[str, asyncio.Task[None]] = {}
        self._last_catch_up: dict[str, float] = {}
        self._catch_up_retry_s = catch_up_retry_s
        pool.on_probed.append(self._check)
        pool.on_removed.append(self._forget)

    @property
    def version(self) -> str:
        """The fleet's version: the last update's, else the one every routable worker reports (or "")."""
        if self.pool.target_version is not None:
            return self.pool.target_version
        versions = {w.weight_version for w in self.pool.routable()}
        return versions.pop() if len(versions) == 1 else ""

    # --- rollouts -----------------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def rollout(self, min_version: str, deadline: float | None) -> AsyncIterator[None]:
        """Hold a running rollout: an update waits for it (unless it aborts). Waits for an update that is running
        first, then checks `min_version`."""
        if not self._no_update.is_set():
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                await asyncio.wait_for(self._no_update.wait(), timeout)
            except TimeoutError as e:
                raise DeadlineExceeded(f"deadline exceeded waiting for the weight update to {self._updating_to}") from e
        if min_version and not version_at_least(self.version, min_version):
            raise FailedPrecondition(
                f"min_weight_version: {min_version!r} asked, the fleet serves {self.version or 'no known version'!r}"
            )
        self._rollouts += 1
        try:
            yield
        finally:
            async with self._rollouts_changed:
                self._rollouts -= 1
                self._rollouts_changed.notify_all()

    async def _wait_for_rollouts(self, timeout_s: float) -> None:
        async with self._rollouts_changed:
            try:
                await asyncio.wait_for(self._rollouts_changed.wait_for(lambda: self._rollouts == 0), timeout_s)
            except TimeoutError as e:
                raise DeadlineExceeded(
                    f"{self._rollouts} rollouts still running after {timeout_s:.0f}s; call again with abort_running"
                ) from e

    # --- updates ------------------------------------------------------------------------------------------------
    async def update(
        self, model_path: str, weight_version: str, abort_running: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> FleetUpdate:
        if self._lock.locked():
            raise Conflict(f"a weight update to {self._updating_to!r} is running; one at a time")
        async with self._lock:
            started = time.monotonic()
            self._updating_to = weight_version
            self._no_update.clear()
            try:
                waited = self._rollouts
                if not abort_running:
                    await self._wait_for_rollouts(timeout_s)
                workers = await self._update_workers(model_path, weight_version, abort_running, timeout_s)
            finally:
                self._no_update.set()
            result = FleetUpdate(weight_version, workers, time.monotonic() - started, waited)
        self._record(result)
        return result

    async def _update_workers(
        self, model_path: str, version: str, abort: bool, timeout_s: float
    ) -> tuple[WorkerUpdate, ...]:
        await self._cancel_catch_ups()  # a catch-up to the old version is moot
        workers = list(self.pool.workers.values())
        if not workers:
            raise Unavailable("no workers known to update")
        previous = (self.pool.target_version, self.model_path)
        self.pool.target_version, self.model_path = version, model_path
        self.pool.updating = True
        try:
            results = await asyncio.gather(
                *(self._update_one(w, model_path, version, abort, timeout_s) for w in workers)
            )
        finally:
            self.pool.updating = False
            self.pool.refresh()
        if not any(r.ok for r in results):
            self.pool.target_version, self.model_path = previous  # the old weights keep serving
            for w in workers:
                w.set_hold(None)
            self.pool.refresh()
            first = results[0]
            if all(r.refused for r in results):
                raise InvalidRequest("model_path", f"every worker refused the checkpoint: {first.error}")
            raise Unavailable(f"no worker took the update to {version!r}: {first.worker}: {first.error}")
        return tuple(results)

    async def _update_one(
        self, w: Worker, model_path: str, version: str, abort: bool, timeout_s: float
    ) -> WorkerUpdate:
        self._busy.add(w.url)
        w.set_hold(f"updating to weight version {version!r}")
        aborted, paused = 0, False
        try:
            aborted = await w.client.pause(abort, timeout_s)
            paused = True
            load_s = await w.client.update_weights(model_path, version, timeout_s)
            reported = await w.client.weight_version(CHECK_TIMEOUT_S)
            w.set_weight_version(reported)
            if reported != version:
                raise WorkerCallFailed(
                    "FAILED_PRECONDITION",
                    f"reports weight version {reported!r} after the update",
                    transport=False,
                    retryable=False,
                )
            w.set_hold(None)
            return WorkerUpdate(w.url, True, reported, load_s, num_aborted=aborted)
        except WorkerCallFailed as e:
            log.warning("worker failed its weight update", extra={"worker": w.url, "error": f"{e.code}: {e.detail}"})
            w.set_hold(f"failed the update to {version!r}: {e.code}: {e.detail}"[:300])
            refused = e.invalid
            return WorkerUpdate(w.url, False, w.weight_version, error=f"{e.code}: {e.detail}", refused=refused)
        finally:
            if paused:
                with contextlib.suppress(WorkerCallFailed):
                    await w.client.resume()
            self._busy.discard(w.url)

    def _record(self, result: FleetUpdate) -> None:
        failed = len(result.failed)
        metrics.WEIGHT_UPDATES.labels("ok" if not failed else "partial").inc()
        metrics.WEIGHT_UPDATE_SECONDS.observe(result.wall_s)
        metrics.FLEET_WEIGHT_VERSION.clear()
        metrics.FLEET_WEIGHT_VERSION.labels(result.weight_version).set(1)
        self._count_held()
        log.info(
            "fleet weight update",
            extra={"weight_version": result.weight_version, "wall_s": round(result.wall_s, 3), "failed": failed},
        )

    def _count_held(self) -> None:
        metrics.WORKERS_HELD.set(sum(1 for w in self.pool.workers.values() if w.hold is not None))

    # --- workers that join (or come back) at another version ----------------------------------------------------
    def _check(self, w: Worker) -> None:
        target = self.pool.target_version
        if target is None or w.url in self._busy or w.url in self._catch_ups:
            return
        if w.weight_version == target:
            if w.hold is not None and w.hold.startswith("failed the update"):
                w.set_hold(None)  # it reached the version another way (e.g. restarted from the new checkpoint)
            return
        if w.hold is None or not w.hold.startswith("failed"):  # keep the last failure's reason on show
            w.set_hold(f"at weight version {w.weight_version!r}, catching up to {target!r}")
        if time.monotonic() - self._last_catch_up.get(w.url, -1e9) < self._catch_up_retry_s:
            return
        task = asyncio.get_running_loop().create_task(self._catch_up(w, target, self.model_path))
        self._catch_ups[w.url] = task
        task.add_done_callback(functools.partial(self._caught_up, w.url))
        self._count_held()

    def _caught_up(self, url: str, task: asyncio.Task[None]) -> None:
        if self._catch_ups.get(url) is task:
            del self._catch_ups[url]

    async def _catch_up(self, w: Worker, version: str, model_path: str) -> None:
        self._last_catch_up[w.url] = time.monotonic()
        log.info("bringing a worker to the fleet's version", extra={"worker": w.url, "weight_version": version})
        try:
            if await w.client.weight_version(CHECK_TIMEOUT_S) != version:
                await w.client.update_weights(model_path, version, DEFAULT_TIMEOUT_S)  # it pauses by itself
            w.set_weight_version(await w.client.weight_version(CHECK_TIMEOUT_S))
        except WorkerCallFailed as e:
            w.set_hold(f"failed to catch up to {version!r}: {e.code}: {e.detail}"[:300])
            log.warning("worker failed to catch up", extra={"worker": w.url, "error": f"{e.code}: {e.detail}"})
            return
        if w.weight_version == version:
            w.set_hold(None)
            self._count_held()

    def _forget(self, url: str) -> None:
        self._last_catch_up.pop(url, None)
        task = self._catch_ups.pop(url, None)
        if task is not None:
            task.cancel()

    def versions(self) -> FleetVersions:
        reasons = {url: self.pool.why_not_routable(w) for url, w in self.pool.workers.items()}
        workers = tuple(
            WorkerVersion(w.url, w.weight_version, w.state.value, not reasons[url], reasons[url])
            for url, w in self.pool.workers.items()
        )
        return FleetVersions(self.version, self.model_path, self._lock.locked(), workers)

    async def stop(self) -> None:
        await self._cancel_catch_ups()

    async def _cancel_catch_ups(self) -> None:
        for task in list(self._catch_ups.values()):
            task.cancel()
        await asyncio.gather(*self._catch_ups.values(), return_exceptions=True)
