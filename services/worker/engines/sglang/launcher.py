"""Start and supervise the SGLang child: version checks, readiness from its HealthCheck, stop on drain."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
from collections.abc import Sequence

import grpc
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.worker.engine_api import EngineUnavailable
from services.worker.engines.sglang.profile import SglangProfile

log = logging.getLogger(__name__)

MIN_SGLANG = (0, 5, 4)  # first release with --grpc-mode (sglang PR #11564, merged 2025-10-13)
MIN_SERVICER_FOR_METRICS = (0, 5, 5)  # smg-grpc-servicer that serves /metrics in gRPC mode (sglang #28298)
_VERSION_PROBE = (
    "import importlib.metadata as m, json\n"
    "def v(name):\n"
    "    try:\n        return m.version(name)\n"
    "    except m.PackageNotFoundError:\n        return None\n"
    "print(json.dumps({'sglang': v('sglang'), 'smg-grpc-servicer': v('smg-grpc-servicer')}))\n"
)


class SglangSetupError(ValueError):
    """SGLang is missing, too old, or the profile is unusable; the message says what to install."""


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def _fmt(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def installed_versions(python: str) -> dict[str, str | None]:
    """Versions of sglang and smg-grpc-servicer in `python`'s environment (without importing sglang)."""
    try:
        out = subprocess.run([python, "-c", _VERSION_PROBE], capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        raise SglangSetupError(f"cannot run {python} to look for sglang: {e}") from e
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def check_versions(versions: dict[str, str | None], profile: SglangProfile) -> None:
    """Raise SglangSetupError naming the version needed when sglang is missing or too old."""
    need = f"sglang>={_fmt(MIN_SGLANG)}"
    sglang = versions.get("sglang")
    if sglang is None:
        raise SglangSetupError(
            f"sglang is not installed in {profile.python or 'this environment'}; install '{need}' (GPU machines only)"
        )
    if parse_version(sglang) < MIN_SGLANG:
        raise SglangSetupError(f"sglang {sglang} is too old: gRPC mode (--grpc-mode) needs {need}")
    servicer = versions.get("smg-grpc-servicer")
    if profile.is_metrics_enabled and servicer and parse_version(servicer) < MIN_SERVICER_FOR_METRICS:
        raise SglangSetupError(
            f"smg-grpc-servicer {servicer} cannot serve metrics in gRPC mode (SGLang refuses to start with "
            f"--enable-metrics); install 'smg-grpc-servicer>={_fmt(MIN_SERVICER_FOR_METRICS)}' or disable metrics"
        )


class SglangChild:
    """The SGLang server process, in its own process group so that stopping it stops its schedulers too."""

    def __init__(self, command: Sequence[str], target: str, poll_s: float = 1.0) -> None:
        self.command = list(command)
        self.target = target
        self.poll_s = poll_s
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def is_running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        log.info("starting sglang", extra={"command": " ".join(self.command)})
        self.proc = await asyncio.create_subprocess_exec(*self.command, start_new_session=True)

    async def wait_healthy(self, stub: pb_grpc.SglangSchedulerStub, timeout_s: float) -> None:
        """Poll the child's HealthCheck until healthy; EngineUnavailable if it exits or times out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if not self.is_running:
                raise EngineUnavailable(f"sglang exited with code {self.proc and self.proc.returncode} while starting")
            with contextlib.suppress(grpc.aio.AioRpcError):
                if (await stub.HealthCheck(pb.HealthCheckRequest(), timeout=max(self.poll_s, 5.0))).healthy:
                    log.info("sglang is healthy", extra={"target": self.target})
                    return
            await asyncio.sleep(self.poll_s)
        raise EngineUnavailable(f"sglang did not become healthy within {timeout_s:.0f} s")

    async def wait_exit(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    async def stop(self, timeout_s: float) -> None:
        """SIGTERM the process group, then SIGKILL after `timeout_s`."""
        if not self.is_running or self.proc is None:
            return
        log.info("stopping sglang", extra={"pid": self.proc.pid})
        self._signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            log.warning("sglang ignored SIGTERM; killing it", extra={"pid": self.proc.pid})
            self._signal(signal.SIGKILL)
            await self.proc.wait()

    def _signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
