"""Per-sandbox memory cgroups (cgroup v1): a fork-and-allocate bomb cannot take the host's memory.

RLIMIT_AS bounds one process; RLIMIT_NPROC bounds how many; their product can still exceed the
host. When this process may create memory cgroups (root on cgroup v1), each sandbox gets its own
child cgroup capping the whole sandbox (runner, tests, their tmpfs pages). Elsewhere it is a no-op
and the rlimits are the bound.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import uuid
from pathlib import Path

CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory")


def _own_memory_cgroup() -> str | None:
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "memory" in controllers.split(","):
                return path
    return None


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Linux /proc/<pid>/task/<tid>/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
    return out


class MemoryCgroups:
    """Creates, fills and removes one memory cgroup per sandbox, or does nothing when unavailable."""

    def __init__(self, base: Path | None) -> None:
        self.base = base

    @classmethod
    def detect(cls) -> MemoryCgroups:
        """Under this process's own v1 memory cgroup when it is writable; disabled otherwise."""
        try:
            own = _own_memory_cgroup()
            if own is None or not (CGROUP_V1_MEMORY / "memory.limit_in_bytes").exists():
                return cls(None)
            base = CGROUP_V1_MEMORY / own.lstrip("/") / f"mimo-verifier-{os.getpid()}"
            base.mkdir(exist_ok=True)
            (base / "memory.limit_in_bytes").read_text()
            atexit.register(_remove_quietly, base)
            return cls(base)
        except (OSError, ValueError):
            return cls(None)

    @property
    def is_enabled(self) -> bool:
        return self.base is not None

    def open(self, limit_bytes: int) -> Path | None:
        """A new cgroup capped at `limit_bytes` (memory and, where accounted, memory+swap)."""
        if self.base is None:
            return None
        path = self.base / uuid.uuid4().hex[:12]
        try:
            path.mkdir()
            (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            with contextlib.suppress(OSError):
                (path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
        except OSError:
            with contextlib.suppress(OSError):
                path.rmdir()
            return None
        return path

    @staticmethod
    def join(path: Path | None, root_pid: int) -> None:
        """Move `root_pid`, then its descendants, into `path` (children forked later inherit it)."""
        if path is None:
            return
        with contextlib.suppress(OSError):
            (path / "cgroup.procs").write_text(str(root_pid))
        for pid in process_tree(root_pid)[1:]:
            with contextlib.suppress(OSError):
                (path / "cgroup.procs").write_text(str(pid))

    @staticmethod
    def oom_kills(path: Path | None) -> int:
        """How many processes the kernel killed for this cgroup's memory limit."""
        if path is None:
            return 0
        with contextlib.suppress(OSError, ValueError):
            for line in (path / "memory.oom_control").read_text().splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
        return 0

    @staticmethod
    async def remove(path: Path | None) -> None:
        """Remove the cgroup once its processes are gone (they may take a moment to die)."""
        if path is None:
            return
        for _ in range(40):
            try:
                path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                await asyncio.sleep(0.05)
