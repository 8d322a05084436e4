"""Shared pieces of `mimo-serve bench router` and `mimo-serve bench rollout`: the model directory, child
processes (sim workers, tokenizer, verifier, our router, SMG) pinned with taskset, statistics and the table."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.net import free_port

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "services" / "worker" / "engines" / "sim" / "profiles"
SMG = Path(sys.executable).with_name("smg")


def model_dir(arg: str | None, tmp: Path) -> Path:
    """--model, else a synthetic tokenizer-only dir with a 32k context (sim workers need only the vocabulary;
    the tiny MiMo checkpoint's 2k context is too short for the benches' prompts and outputs)."""
    if arg:
        return Path(arg).resolve()
    from services.worker.engines.sim.synthetic_model import write_synthetic_model

    return write_synthetic_model(tmp / "model", max_context_length=32768)


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


@dataclass
class Proc:
    """One child process; `target` is its gRPC host:port or HTTP base URL."""

    name: str
    popen: subprocess.Popen[bytes]
    target: str
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process (all its threads) so far."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def tail(self, n: int = 1500) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


@dataclass
class Procs:
    """Starts children (each waits until it serves) and stops them all, newest first."""

    log_dir: Path
    model: Path
    procs: list[Proc] = field(default_factory=list)

    def _spawn(self, name: str, argv: list[str], target: str, cpu: int | None) -> Proc:
        if cpu is not None and shutil.which("taskset") and len(cpus()) > 1:
            argv = ["taskset", "-c", str(cpu), *argv]
        log = self.log_dir / f"{name}.log"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                argv, stdout=out, stderr=out, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
            )
        proc = Proc(name, popen, target, log)
        self.procs.append(proc)
        return proc

    def _mimo(self, name: str, args: list[str], cpu: int | None) -> Proc:
        port = free_port()
        argv = [sys.executable, "-m", "services.cli", *args, "--listen", f"127.0.0.1:{port}"]
        argv += ["--metrics-port", "-1", "--log-level", "WARNING"]
        return self._spawn(name, argv, f"127.0.0.1:{port}", cpu)

    async def workers(self, n: int, profile: Path, time_scale: float, cpu: int | None = None) -> list[Proc]:
        procs = [self._mimo(f"worker-{i}", self._worker_args(profile, time_scale), cpu) for i in range(n)]
        await asyncio.gather(*(self._ready(p) for p in procs))
        return procs

    def _worker_args(self, profile: Path, time_scale: float) -> list[str]:
        args = ["worker", "--engine", "sim", "--model", str(self.model), "--profile", str(profile)]
        return [*args, "--time-scale", str(time_scale)]

    async def tokenizer(self, cpu: int | None = None) -> Proc:
        return await self._ready(self._mimo("tokenizer", ["tokenizer", "--model", str(self.model)], cpu))

    async def verifier(self, args: Sequence[str] = (), cpu: int | None = None) -> Proc:
        return await self._ready(self._mimo("verifier", ["verifier", *args], cpu), timeout_s=120)

    async def router(
        self,
        workers: Sequence[Proc],
        tokenizer: Proc,
        policy: str,
        cpu: int | None = None,
        verifier: str | None = None,
        extra: Sequence[str] = (),
        http_port: int | None = None,
    ) -> Proc:
        args = ["router", "--workers", ",".join(f"grpc://{w.target}" for w in workers)]
        args += ["--tokenizer", tokenizer.target, "--policy", policy, "--health-interval-s", "1"]
        args += ["--http-listen", f"127.0.0.1:{http_port}"] if http_port else ["--no-http"]
        args += ["--verifier", verifier or f"127.0.0.1:{free_port()}", *extra]
        proc = await self._ready(self._mimo(f"router-{policy}", args, cpu))
        await self._router_sees_workers(proc, len(workers))
        return proc

    async def passthrough(self, worker: Proc, cpu: int | None = None) -> Proc:
        """A minimal Python grpc.aio proxy in front of `worker` (see bench_clients.passthrough_main)."""
        port = free_port()
        argv = [sys.executable, "-m", "bench.clients", worker.target, f"127.0.0.1:{port}"]
        return await self._ready(self._spawn("py-passthrough", argv, f"127.0.0.1:{port}", cpu))

    async def smg(
        self, workers: Sequence[Proc], policy: str, cpu: int | None = None, extra: Sequence[str] = (), tag: str = ""
    ) -> Proc:
        port = free_port()
        argv = [str(SMG), "launch", "--worker-urls", *(f"grpc://{w.target}" for w in workers)]
        argv += ["--model-path", str(self.model), "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--prometheus-port", str(free_port()), "--policy", policy, "--log-level", "warn"]
        argv += ["--shutdown-grace-period-secs", "1", *extra]
        proc = self._spawn(f"smg-{policy}{tag}", argv, f"http://127.0.0.1:{port}", cpu)
        await self._smg_ready(proc, len(workers))
        return proc

    async def _ready(self, proc: Proc, timeout_s: float = 60.0) -> Proc:
        deadline = time.monotonic() + timeout_s
        async with grpc.aio.insecure_channel(proc.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if proc.popen.poll() is not None:
                    raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
                with contextlib.suppress(grpc.aio.AioRpcError):
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return proc
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{proc.name} not serving after {timeout_s:.0f}s:\n{proc.tail()}")
                await asyncio.sleep(0.1)

    async def _router_sees_workers(self, proc: Proc, n: int, timeout_s: float = 30.0) -> None:
        from mimo_client.v1 import inference_pb2, inference_pb2_grpc

        deadline = time.monotonic() + timeout_s
        async with grpc.aio.insecure_channel(proc.target) as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            while time.monotonic() < deadline:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    models = await stub.ListModels(inference_pb2.ListModelsRequest(), timeout=2)
                    if models.models and models.models[0].num_workers >= n:
                        return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{proc.name}: fewer than {n} routable workers after {timeout_s:.0f}s:\n{proc.tail()}")

    async def _smg_ready(self, proc: Proc, n: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if proc.popen.poll() is not None:
                    raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    async with session.get(proc.target + "/readiness", timeout=aiohttp.ClientTimeout(2)) as r:
                        body = await r.json(content_type=None)
                        if r.status == 200 and body.get("healthy_workers", 0) >= n:
                            return
                await asyncio.sleep(0.2)
        raise TimeoutError(f"{proc.name}: {n} healthy workers not reported after {timeout_s:.0f}s:\n{proc.tail()}")

    def stop(self, procs: Sequence[Proc] | None = None, grace_s: float = 5.0) -> None:
        """SIGTERM (newest first), then SIGKILL what is left after `grace_s`."""
        chosen = list(reversed(self.procs if procs is None else procs))
        for proc in chosen:
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in chosen:
            try:
                proc.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.popen.wait()
            self.procs.remove(proc)


# ---- statistics and output -------------------------------------------------------------------------------------
def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def say(*parts: object) -> None:
    """Progress to stderr, so stdout holds only the tables and the headline."""
    print(*parts, file=sys.stderr, flush=True)
