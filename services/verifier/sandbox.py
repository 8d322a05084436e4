"""The bubblewrap sandbox: one sandbox per task, running runner.py, which forks a fresh process per test.

Isolation: the sandbox runs as uid 65534 (setuid before bwrap, so the kernel sees nobody, not root)
in new user, pid, ipc, uts, net and cgroup namespaces (no network, not even the host loopback), with
a read-only minimal root (/usr and its symlinks), fresh /proc and a read-only /dev; the only writable
places are a private size-capped tmpfs /tmp and /dev/shm. Each test runs in a new process with its own
rlimits (CPU seconds, address space, processes, file size, open files), its own session, and a
wall-clock limit that kills its process group; between tests the runner kills every other process in
the sandbox and wipes /tmp. Where possible (root, cgroup v1) a memory cgroup caps the whole sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import marshal
import math
import os
import shutil
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.verifier.cgroups import MemoryCgroups

SANDBOX_UID = 65534
_RUNNER = Path(__file__).with_name("runner.py")


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-test limits; wall time is twice the time limit plus one second, so a sleeping program ends too."""

    time_limit_s: float = 2.0
    memory_bytes: int = 1 << 30
    output_bytes: int = 1 << 20
    num_processes: int = 32
    file_bytes: int = 16 << 20
    open_files: int = 64

    @property
    def cpu_limit_s(self) -> int:
        return max(1, math.ceil(self.time_limit_s))

    @property
    def wall_limit_s(self) -> float:
        return 2 * self.time_limit_s + 1.0

    def wire(self) -> dict[str, Any]:
        return {
            "cpu_s": self.cpu_limit_s,
            "wall_s": self.wall_limit_s,
            "memory": self.memory_bytes,
            "output": self.output_bytes,
            "nproc": self.num_processes,
            "fsize": self.file_bytes,
            "nofile": self.open_files,
            "stack": min(64 << 20, self.memory_bytes),
        }


COMPILE_CGROUP_BYTES = 1 << 30  # the whole compiler (g++, cc1plus, as, ld) inside the sandbox's memory cgroup
COMPILE_LIMITS = Limits(
    time_limit_s=15.0,
    memory_bytes=2 << 30,
    output_bytes=1 << 20,
    num_processes=64,
    file_bytes=256 << 20,
    open_files=256,
)


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Where the tools are and whether to isolate at all (`is_isolated=False` is the loudly named unsafe mode)."""

    is_isolated: bool = True
    uid: int = SANDBOX_UID
    bwrap: str = "bwrap"
    python: str = "/usr/bin/python3"
    cxx: str | None = field(default_factory=lambda: shutil.which("g++"))
    tmp_bytes: int = 128 << 20  # the tmpfs /tmp (the work directory lives there)
    shm_bytes: int = 16 << 20  # the tmpfs /dev/shm
    runner_bytes: int = 96 << 20  # memory cgroup headroom for the runner beyond one test's limit


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What happened to one test's process; `error` is set when the sandbox itself failed."""

    exit_code: int | None = None
    signal: int | None = None
    cpu_s: float = 0.0
    wall_s: float = 0.0
    timed_out: bool = False
    output_exceeded: bool = False
    stdout: bytes = b""
    stderr: str = ""
    error: str = ""
    runner_died: bool = False
    oom_killed: bool = False  # the sandbox's memory cgroup killed a process during this test


class SandboxError(RuntimeError):
    """The sandbox could not be started or stopped answering outside any test."""


class Sandbox:
    """Starts sessions: one bubblewrap sandbox per task."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self._runner_source = _RUNNER.read_text()
        self.cgroups = MemoryCgroups.detect() if config.is_isolated else MemoryCgroups(None)

    def command(self) -> list[str]:
        """The argv that starts the runner (inside bubblewrap unless unsafe)."""
        runner = [self.config.python, "-I", "-c", self._runner_source]
        return self.isolate(runner) if self.config.is_isolated else runner

    def isolate(self, argv: list[str], binds: Sequence[tuple[str, str]] = (), wrapper: Sequence[str] = ()) -> list[str]:
        """`argv` inside bubblewrap as the sandbox uid; `binds` are (host file, sandbox path) read-only binds.

        setpriv drops to the sandbox uid rather than Popen(user=...): that would make CPython fork()
        (not vfork) the gRPC process, and forking a process full of gRPC threads can crash the child.
        """
        as_uid = []
        if os.geteuid() == 0:
            as_uid = ["setpriv", f"--reuid={self.config.uid}", f"--regid={self.config.uid}", "--clear-groups", "--"]
        usr_links = [("usr/lib", "/lib"), ("usr/lib64", "/lib64"), ("usr/bin", "/bin"), ("usr/sbin", "/sbin")]
        links = [a for target, name in usr_links if os.path.exists(name) for a in ("--symlink", target, name)]
        extra = [a for host, inside in binds for a in ("--ro-bind", host, inside)]
        return [
            *as_uid,
            *wrapper,
            self.config.bwrap,
            *(
                "--unshare-all",
                "--unshare-user",
                "--disable-userns",
                "--die-with-parent",
                "--new-session",
                "--as-pid-1",
            ),
            *("--hostname", "sandbox", "--ro-bind", "/usr", "/usr", *links),
            *("--ro-bind-try", "/etc/alternatives", "/etc/alternatives"),
            *("--proc", "/proc", "--dev", "/dev", "--size", str(self.config.shm_bytes), "--tmpfs", "/dev/shm"),
            *("--remount-ro", "/dev", "--size", str(self.config.tmp_bytes), "--tmpfs", "/tmp", *extra),
            *("--remount-ro", "/", "--chdir", "/tmp"),
            *argv,
        ]

    def session(self, language: str, source: str, entry_point: str, limits: Limits) -> Session:
        return Session(self, language, source, entry_point, limits)


class Session:
    """One running sandbox; `run` one test at a time. Use as `async with sandbox.session(...) as s`."""

    def __init__(self, sandbox: Sandbox, language: str, source: str, entry_point: str, limits: Limits) -> None:
        self._sandbox = sandbox
        self._language = language
        self._source = source
        self._entry_point = entry_point
        self._limits = limits
        self._proc: asyncio.subprocess.Process | None = None
        self._tmpdir: str | None = None
        self._stderr = b""
        self._stderr_task: asyncio.Task[None] | None = None
        self.compile_error: str | None = None
        self.pid: int | None = None
        self._cgroup: Path | None = None

    async def __aenter__(self) -> Session:
        config = self._sandbox.config
        work = "/tmp/w"
        if not config.is_isolated:
            self._tmpdir = tempfile.mkdtemp(prefix="mimo-unsafe-")
            work = os.path.join(self._tmpdir, "w")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self._sandbox.command(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                cwd=self._tmpdir or "/",
                start_new_session=True,
                limit=1 << 20,
            )
        except OSError as e:
            await self.close()
            raise SandboxError(f"could not start the sandbox: {e}") from e
        self.pid = self._proc.pid
        # The runner waits for our header, so nothing untrusted has run: cap the whole sandbox now
        # (bwrap first, so a runner it forks later inherits the cgroup; then whatever it already forked).
        test_bytes = max(self._limits.memory_bytes, COMPILE_CGROUP_BYTES if self._language == "cpp" else 0)
        cgroups = self._sandbox.cgroups
        self._cgroup = cgroups.open(test_bytes + config.tmp_bytes + config.shm_bytes + config.runner_bytes)
        cgroups.join(self._cgroup, self._proc.pid)
        self._stderr_task = asyncio.create_task(self._read_stderr())
        header = {
            "lang": self._language,
            "source": self._source,
            "entry": self._entry_point,
            "limits": self._limits.wire(),
            "compile_limits": COMPILE_LIMITS.wire(),
            "work": work,
            "sandboxed": config.is_isolated,
            "cxx": config.cxx,
        }
        first_wait_s = COMPILE_LIMITS.wall_limit_s + 10 if self._language == "cpp" else 15.0
        try:
            await self._send(header)
            meta, _, err = await self._receive(first_wait_s)
        except SandboxError:
            await self.close()
            raise
        if meta.get("kind") == "compile" and not meta.get("ok"):
            self.compile_error = err.decode("utf-8", "replace") or "compile error"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def run(self, stdin: str, args_json: str | None = None) -> RunOutcome:
        """Run one test in a fresh process inside this sandbox."""
        if self._proc is None or self._proc.returncode is not None:
            return RunOutcome(error="the sandbox is not running", runner_died=True)
        kills_before = self._sandbox.cgroups.oom_kills(self._cgroup)
        try:
            await self._send({"stdin": stdin, "args": args_json})
            meta, out, err = await self._receive(self._limits.wall_limit_s + 10.0)
        except SandboxError as e:
            await self.close()
            return RunOutcome(error=str(e), runner_died=True)
        oom_killed = self._sandbox.cgroups.oom_kills(self._cgroup) > kills_before
        return RunOutcome(
            exit_code=meta.get("exit"),
            signal=meta.get("signal"),
            cpu_s=float(meta.get("cpu_s", 0.0)),
            wall_s=float(meta.get("wall_s", 0.0)),
            timed_out=bool(meta.get("timeout")),
            output_exceeded=bool(meta.get("olimit")),
            stdout=out,
            stderr=err.decode("utf-8", "replace"),
            oom_killed=oom_killed,
        )

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        frame = marshal.dumps(message)  # host → runner only: the trusted direction
        try:
            self._proc.stdin.write(len(frame).to_bytes(4, "big") + frame)
            await self._proc.stdin.drain()
        except (ConnectionError, OSError) as e:
            why = await self._why_after_exit()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 1.0)
            raise SandboxError(f"the sandbox stopped reading ({e!r}, exit {self._proc.returncode}): {why}") from e

    async def _receive(self, timeout_s: float) -> tuple[dict[str, Any], bytes, bytes]:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        try:
            async with asyncio.timeout(timeout_s):
                line = await stdout.readline()
                if not line:
                    raise SandboxError(f"the sandbox exited: {await self._why_after_exit()}")
                meta = json.loads(line)
                out = await stdout.readexactly(int(meta["out"]))
                err = await stdout.readexactly(int(meta["err"]))
        except TimeoutError as e:
            raise SandboxError(f"the sandbox did not answer within {timeout_s:g} s") from e
        except (asyncio.IncompleteReadError, ValueError, KeyError) as e:
            raise SandboxError(f"the sandbox broke off its reply: {await self._why_after_exit()}") from e
        return meta, out, err

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while chunk := await self._proc.stderr.read(65536):
            self._stderr = (self._stderr + chunk)[-4096:]

    def _why(self) -> str:
        text = self._stderr.decode("utf-8", "replace").strip()
        return text[-500:] if text else "no message"

    async def _why_after_exit(self) -> str:
        if self._stderr_task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 0.5)
        return self._why()

    async def close(self) -> None:
        """End the sandbox: EOF to the runner, then kill its process group; always drains and reaps."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                with contextlib.suppress(Exception):
                    proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 1.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                if proc.stdout is not None:  # wait() only returns once the pipes are drained
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(proc.stdout.read(), 5.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 5.0)
        if self._stderr_task is not None:
            self._stderr_task.cancel()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        cgroup, self._cgroup = self._cgroup, None
        await self._sandbox.cgroups.remove(cgroup)
