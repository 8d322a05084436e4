"""Run MiMo Serve's parts as supervised child processes on one machine (used by `mimo-serve up`, tests, benches)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mimo_client.v1 import inference_pb2, inference_pb2_grpc

from services.common.net import free_port

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One part: `mimo-serve <args>` serving gRPC on `port`."""

    name: str
    args: tuple[str, ...]
    port: int
    metrics_port: int | None = None
    ready_timeout_s: float = 120.0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(slots=True)
class Child:
    spec: ChildSpec
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    log_file: Path | None = None


async def wait_routable(router: str, num_workers: int, timeout_s: float) -> int:
    """Until the router reports `num_workers` routable workers (ListModels), or time runs out; returns the count."""
    deadline = time.monotonic() + timeout_s
    routable = 0
    async with grpc.aio.insecure_channel(router) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.ListModels(inference_pb2.ListModelsRequest(), timeout=2)
                routable = reply.models[0].num_workers if reply.models else 0
                if routable >= num_workers:
                    break
            await asyncio.sleep(0.2)
    return routable


async def wait_serving(target: str, timeout_s: float, process: asyncio.subprocess.Process | None = None) -> None:
    """Until the gRPC health check says SERVING; raises if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process is not None and process.returncode is not None:
                raise RuntimeError(f"{target}: process exited with code {process.returncode} before serving")
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target}: not serving after {timeout_s:.0f}s")
            await asyncio.sleep(0.1)


@dataclass
class Stack:
    """Starts children in order (each waits for the previous to serve), restarts a crashed one, stops all."""

    specs: Sequence[ChildSpec]
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    max_restarts: int = 5
    children: list[Child] = field(default_factory=list)
    _supervisor: asyncio.Task[None] | None = None
    _stopping: bool = False

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.spec.name == name)

    async def _spawn(self, child: Child) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        child.log_file = self.log_dir / f"{child.spec.name}.log"
        with open(child.log_file, "ab") as out:
            child.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.cli",
                *child.spec.args,
                stdout=out,
                stderr=out,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        await wait_serving(child.spec.target, child.spec.ready_timeout_s, child.process)

    async def start(self) -> None:
        for spec in self.specs:
            child = Child(spec)
            self.children.append(child)
            try:
                await self._spawn(child)
            except (RuntimeError, TimeoutError) as e:
                tail = child.log_file.read_text()[-2000:] if child.log_file else ""
                await self.stop()
                raise RuntimeError(f"{spec.name} failed to start: {e}\n--- {child.log_file} ---\n{tail}") from e
            log.info("started", extra={"part": spec.name, "target": spec.target})
        self._supervisor = asyncio.create_task(self._supervise())

    async def _supervise(self) -> None:
        while not self._stopping:
            await asyncio.sleep(0.5)
            for child in self.children:
                if self._stopping or child.process is None or child.process.returncode is None:
                    continue
                if child.restarts >= self.max_restarts:
                    continue
                child.restarts += 1
                print(
                    f"mimo-serve up: {child.spec.name} exited with code {child.process.returncode}; "
                    f"restarting ({child.restarts}/{self.max_restarts})",
                    file=sys.stderr,
                    flush=True,
                )
                with contextlib.suppress(RuntimeError, TimeoutError):
                    await self._spawn(child)

    async def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM every child (router first), wait for the drains, kill what is left."""
        self._stopping = True
        if self._supervisor:
            self._supervisor.cancel()
        running = [c.process for c in reversed(self.children) if c.process and c.process.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                await asyncio.wait_for(process.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


@dataclass(frozen=True, slots=True)
class StackPlan:
    """Ports and options of a local stack."""

    model: Path
    engine: str = "torch"
    num_workers: int = 2
    router_port: int = 50051
    http_port: int = 8000  # the router's OpenAI HTTP API; 0 turns it off
    tokenizer_port: int = 50052
    verifier_port: int = 50053
    worker_base_port: int = 31000
    metrics_base_port: int = 9100  # router +0, tokenizer +1, verifier +2, workers +100…
    policy: str = "cache_aware"
    worker_args: tuple[str, ...] = ()
    verifier_args: tuple[str, ...] = ()
    router_args: tuple[str, ...] = ()

    def specs(self) -> list[ChildSpec]:
        m = self.metrics_base_port
        workers = [
            ChildSpec(
                f"worker-{i}",
                (
                    "worker",
                    "--engine",
                    self.engine,
                    "--model",
                    str(self.model),
                    "--listen",
                    f"127.0.0.1:{self.worker_base_port + i}",
                    "--metrics-port",
                    str(m + 100 + i),
                    *self.worker_args,
                ),
                self.worker_base_port + i,
                m + 100 + i,
            )
            for i in range(self.num_workers)
        ]
        worker_urls = ",".join(f"grpc://{w.target}" for w in workers)
        return [
            ChildSpec(
                "tokenizer",
                (
                    "tokenizer",
                    "--model",
                    str(self.model),
                    "--listen",
                    f"127.0.0.1:{self.tokenizer_port}",
                    "--metrics-port",
                    str(m + 1),
                ),
                self.tokenizer_port,
                m + 1,
            ),
            ChildSpec(
                "verifier",
                (
                    "verifier",
                    "--listen",
                    f"127.0.0.1:{self.verifier_port}",
                    "--metrics-port",
                    str(m + 2),
                    *self.verifier_args,
                ),
                self.verifier_port,
                m + 2,
            ),
            *workers,
            ChildSpec(
                "router",
                (
                    "router",
                    "--listen",
                    f"127.0.0.1:{self.router_port}",
                    "--metrics-port",
                    str(m),
                    "--workers",
                    worker_urls,
                    "--tokenizer",
                    f"127.0.0.1:{self.tokenizer_port}",
                    "--verifier",
                    f"127.0.0.1:{self.verifier_port}",
                    "--policy",
                    self.policy,
                    "--http-listen",
                    f"127.0.0.1:{self.http_port}" if self.http_port else "",
                    *self.router_args,
                ),
                self.router_port,
                m,
            ),
        ]


def random_ports_plan(model: Path, **options: Any) -> StackPlan:
    """A plan on free ports (tests, benches); `options` are other StackPlan fields."""
    num_workers = int(options.get("num_workers", 2))
    return StackPlan(
        model=model,
        router_port=free_port(),
        http_port=free_port(),
        tokenizer_port=free_port(),
        verifier_port=free_port(),
        worker_base_port=_free_run(free_port() + 1, num_workers),  # workers take consecutive ports
        metrics_base_port=_free_run(free_port() + 200, 110 + num_workers),
        **options,
    )


def _free_run(start: int, length: int) -> int:
    """First port p >= start such that p .. p+length-1 are all free."""
    port = start
    while port < 65000:
        if all(_is_free(port + i) for i in range(length)):
            return port
        port += length + 1
    raise OSError("no free port range")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
