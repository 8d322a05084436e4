"""The math pool: worker processes created before serving, fed batches, killed and replaced on a hard deadline.

math-verify must run on a process's main thread (SIGALRM timeouts), and SIGALRM cannot interrupt a
long C-level call, so each worker is a separate process and the parent enforces a hard per-task
deadline by SIGKILL. Workers come from a forkserver (exec'd, so safe next to gRPC's threads) that
has math-verify preloaded; a replacement starts in tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import resource
import signal
import sys
import time
import types
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from services.verifier.domain import Verdict
from services.verifier.math_check import MathChecker, MathOutcome
from services.verifier.math_fast import use_two_stage_parsing

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """How many workers, how long a task may take, and how work is batched."""

    num_processes: int = 2
    hard_deadline_s: float = 12.0  # per task; past it the worker is killed and replaced
    parse_timeout_s: int = 5  # math-verify's own timeouts (whole seconds)
    verify_timeout_s: int = 5
    max_batch: int = 16  # tasks per round trip to a worker
    max_tasks_per_process: int = 5000  # recycle workers to bound memory growth
    memory_limit_bytes: int | None = 2 << 30  # RLIMIT_AS of each worker


def _worker_main(conn: Connection, settings: PoolSettings) -> None:
    """A worker: receive batches of (key, response, references), send (key, outcome) per task."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if settings.memory_limit_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (settings.memory_limit_bytes, settings.memory_limit_bytes))
    use_two_stage_parsing()
    checker = MathChecker(settings.parse_timeout_s, settings.verify_timeout_s)
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):
            return
        if batch is None:
            return
        if batch == "clear":
            checker = MathChecker(settings.parse_timeout_s, settings.verify_timeout_s)
            continue
        for key, response, references in batch:
            conn.send((key, checker.check(response, references)))


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(slots=True)
class _Job:
    response: str
    references: tuple[str, ...]
    future: asyncio.Future[MathOutcome]


@contextlib.contextmanager
def _main_not_reimported() -> Iterator[None]:
    """Workers need nothing from __main__: stop multiprocessing from re-running it in each of them.

    A forkserver child runs the parent's main script again (as __mp_main__) unless the main module
    is named "__main__"; a script without an `if __name__ == "__main__"` guard would otherwise start
    pools from inside its own workers, recursively.
    """
    main = sys.modules.get("__main__")
    saved = getattr(main, "__spec__", None)
    if main is not None:
        main.__spec__ = types.SimpleNamespace(name="__main__")  # type: ignore[assignment]
    try:
        yield
    finally:
        if main is not None:
            main.__spec__ = saved


class _Worker:
    """One process and the pipe to it."""

    def __init__(self, ctx: Any, settings: PoolSettings) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child, settings), daemon=True, name="mimo-math")
        with _main_not_reimported():
            self.process.start()
        child.close()
        self.tasks_done = 0

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class MathPool:
    """Checks math answers in N processes; `check` is awaitable from the event loop."""

    def __init__(self, settings: PoolSettings, on_event: Callable[[str, int], None] | None = None) -> None:
        self.settings = settings
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(["services.verifier.math_check"])
        self._workers: list[_Worker] = []
        self._queue: deque[_Job] = deque()
        self._wakeup: asyncio.Event | None = None
        self._drivers: list[asyncio.Task[None]] = []
        self._on_event = on_event or (lambda _name, _value: None)
        self.num_busy = 0
        self.num_restarts = 0

    @property
    def num_queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        """Create the worker processes (call before the gRPC server starts)."""
        self._workers = [_Worker(self._ctx, self.settings) for _ in range(self.settings.num_processes)]

    async def check(self, response: str, references: tuple[str, ...]) -> MathOutcome:
        """Queue one task and wait for its outcome (always an outcome, never an exception)."""
        if not self._workers:
            raise RuntimeError("MathPool.start() was not called")
        loop = asyncio.get_running_loop()
        if not self._drivers:
            self._wakeup = asyncio.Event()
            self._drivers = [loop.create_task(self._drive(i)) for i in range(len(self._workers))]
        job = _Job(response, references, loop.create_future())
        self._queue.append(job)
        self._on_event("queued", len(self._queue))
        assert self._wakeup is not None
        self._wakeup.set()
        return await job.future

    async def clear_caches(self) -> None:
        """Forget every worker's caches (benchmarks use this between rounds)."""
        for w in self._workers:
            w.conn.send("clear")

    async def close(self) -> None:
        for d in self._drivers:
            d.cancel()
        for w in self._workers:
            with contextlib.suppress(OSError):
                w.conn.send(None)
        for w in self._workers:
            w.process.join(timeout=2)
            w.kill()
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.set_result(MathOutcome(False, Verdict.ERROR, "", "the verifier is shutting down", 0.0))

    def _take_batch(self) -> list[_Job]:
        share = 1 + len(self._queue) // max(1, len(self._workers))
        n = min(self.settings.max_batch, share)
        batch: list[_Job] = []
        while self._queue and len(batch) < n:
            job = self._queue.popleft()
            if not job.future.done():  # the caller may have given up (cancelled RPC)
                batch.append(job)
        return batch

    async def _drive(self, slot: int) -> None:
        """Feed one worker: take a batch, send it, collect outcomes under the hard deadline."""
        assert self._wakeup is not None
        while True:
            batch = self._take_batch()
            if not batch:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self.num_busy += 1
            self._on_event("busy", self.num_busy)
            try:
                await self._run_batch(slot, batch)
            finally:
                self.num_busy -= 1
                self._on_event("busy", self.num_busy)

    async def _run_batch(self, slot: int, batch: list[_Job]) -> None:
        worker = self._workers[slot]
        try:
            worker.conn.send([(i, job.response, job.references) for i, job in enumerate(batch)])
        except OSError:
            self._replace(slot, "died")
            self._requeue(batch)
            return
        for i, job in enumerate(batch):
            started = time.monotonic()
            outcome = await self._receive(worker, i)
            if isinstance(outcome, str):
                reason = outcome
                self._replace(slot, reason)
                why = (
                    f"the checker ran past its {self.settings.hard_deadline_s:g} s hard deadline and was killed"
                    if reason == "hard_deadline"
                    else "the checker process died on this answer (out of memory?)"
                )
                verdict = Verdict.TIMEOUT if reason == "hard_deadline" else Verdict.ERROR
                self._resolve(job, MathOutcome(False, verdict, "", why, time.monotonic() - started))
                self._requeue(batch[i + 1 :])
                return
            self._resolve(job, outcome)
        worker.tasks_done += len(batch)
        if worker.tasks_done >= self.settings.max_tasks_per_process:
            self._replace(slot, "recycled")

    async def _receive(self, worker: _Worker, expected_key: int) -> MathOutcome | str:
        """The next outcome from `worker`, or why there is none: "hard_deadline" or "died"."""
        deadline = time.monotonic() + self.settings.hard_deadline_s
        loop = asyncio.get_running_loop()
        while True:
            try:
                if worker.conn.poll():
                    key, outcome = worker.conn.recv()
                    if key == expected_key:
                        return outcome
                    continue
            except (EOFError, OSError):
                return "died"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "hard_deadline"
            ready: asyncio.Future[None] = loop.create_future()
            fd = worker.conn.fileno()
            loop.add_reader(fd, _wake, ready)
            try:
                await asyncio.wait_for(ready, remaining)
            except TimeoutError:
                return "hard_deadline"
            finally:
                loop.remove_reader(fd)

    def _replace(self, slot: int, reason: str) -> None:
        old = self._workers[slot]
        old.kill()
        self._workers[slot] = _Worker(self._ctx, self.settings)
        self.num_restarts += 1
        self._on_event(f"restart:{reason}", 1)
        if reason != "recycled":
            log.warning("math worker replaced", extra={"reason": reason, "pid": old.process.pid})

    def _requeue(self, jobs: list[_Job]) -> None:
        self._queue.extendleft(reversed(jobs))
        if self._wakeup is not None:
            self._wakeup.set()

    @staticmethod
    def _resolve(job: _Job, outcome: MathOutcome) -> None:
        if not job.future.done():
            job.future.set_result(outcome)
