"""`mimo-serve bench weights`: a fleet weight update under load through the router, in place, against restarting
the workers.

Workers: 4 sim (tiny-cpu profile, its modelled load time scaled by --sim-time-scale) and 2 torch, all on
the tiny MiMo, behind one router. Clients keep sending short Generate calls to the router the whole time.
Measured per way: the time from the update's start to every worker serving the new version, and the
requests that failed meanwhile.
- in place: the router's `mimo.v1.Admin.UpdateWeights` (fleet.py: every worker paused, updated, its
  version checked, continued; requests meanwhile wait in the router for a worker at the new version);
- peer, restart: every worker stopped (SIGTERM, drain) and started again on the new checkpoint, the way
  a pool without a weight-update call rolls a new model out; done when the router routes to all again.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import torch
from mimo_client.v1 import admin_pb2, admin_pb2_grpc, common_pb2, inference_pb2, inference_pb2_grpc
from mimo_client.v1 import worker_control_pb2 as wc
from mimo_client.v1 import worker_control_pb2_grpc as wc_grpc
from safetensors.torch import load_file, save_file

from bench.common import PROFILES, REPO, Proc, Procs, ratio, say, table
from services.common.net import free_port

TINY = REPO / "models" / "tiny-mimo"


@dataclass
class Load:
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    running: bool = True


def checkpoint(dest: Path) -> Path:
    """The tiny MiMo with every tensor nudged (MTP layer included), as a trainer would write step 1."""
    dest.mkdir(parents=True)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY / name, dest / name)
    gen = torch.Generator().manual_seed(1)
    state = {k: (v.float() * (1 + 0.01 * torch.randn(v.shape, generator=gen))).to(v.dtype)
             for k, v in load_file(str(TINY / "model.safetensors")).items()}  # fmt: skip
    save_file(state, str(dest / "model.safetensors"))
    return dest


def worker_args(engine: str, model: Path, args: argparse.Namespace, version: str) -> list[str]:
    out = ["worker", "--engine", engine, "--model", str(model), "--weight-version", version]
    if engine == "sim":
        out += ["--profile", str(PROFILES / "tiny-cpu.json"), "--time-scale", str(args.sim_time_scale)]
    return out


async def start(
    procs: Procs, engines: list[str], model: Path, args: argparse.Namespace, ports: list[str], version: str = "v0"
) -> list[Proc]:
    started = []
    for i, (engine, target) in enumerate(zip(engines, ports, strict=True)):
        argv = [
            *worker_args(engine, model, args, version),
            "--listen",
            target,
            "--metrics-port",
            "-1",
            "--log-level",
            "WARNING",
        ]
        started.append(procs._spawn(f"{engine}-{i}", [sys.executable, "-m", "services.cli", *argv], target, None))
    await asyncio.gather(*(procs._ready(p, timeout_s=180) for p in started))
    await asyncio.gather(*(engine_loaded(p.target) for p in started))
    return started


async def engine_loaded(target: str, timeout_s: float = 180.0) -> None:
    """SERVING comes before the engine has loaded; GetWeightVersion answers once it has."""
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(target) as channel:
        stub = wc_grpc.WorkerControlStub(channel)
        while time.monotonic() < deadline:
            try:
                if (await stub.GetWeightVersion(wc.GetWeightVersionRequest(), timeout=5)).weight_version:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{target}: engine not loaded after {timeout_s:.0f} s")


async def client_loop(router: str, load: Load, counter: itertools.count) -> None:
    async with grpc.aio.insecure_channel(router) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        while load.running:
            request = inference_pb2.GenerateRequest(
                token_ids=common_pb2.TokenIds(ids=[1, 10, 20, 30]),
                sampling=common_pb2.SamplingParams(temperature=0, max_new_tokens=8, ignore_eos=True),
                request_id=f"r{next(counter)}",
            )
            try:
                await stub.Generate(request, timeout=120)
                load.ok += 1
            except grpc.aio.AioRpcError as e:
                load.failed += 1
                load.errors.append(e.code().name)
                await asyncio.sleep(0.05)


async def in_place(router: str, path: Path) -> tuple[float, list[float]]:
    async with grpc.aio.insecure_channel(router) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        t0 = time.perf_counter()
        reply = await admin.UpdateWeights(
            admin_pb2.FleetUpdateRequest(model_path=str(path), weight_version="v1"), timeout=600
        )
        wall = time.perf_counter() - t0
        assert not reply.num_failed, reply
        versions = await admin.GetWeightVersions(admin_pb2.GetWeightVersionsRequest(), timeout=30)
        assert {w.weight_version for w in versions.workers} == {"v1"} and all(w.routable for w in versions.workers)
    return wall, [w.load_s for w in reply.workers]


async def routing_to_all(router: str, num_workers: int, version: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(router) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        while time.monotonic() < deadline:
            versions = await admin.GetWeightVersions(admin_pb2.GetWeightVersionsRequest(), timeout=30)
            ok = [w for w in versions.workers if w.routable and w.weight_version == version]
            if len(ok) == num_workers:
                return
            await asyncio.sleep(0.05)
    raise TimeoutError(f"the router did not route to {num_workers} workers at {version} within {timeout_s:.0f} s")


async def restart(
    procs: Procs, workers: list[Proc], engines: list[str], path: Path, args, router: str
) -> tuple[float, list[Proc]]:
    t0 = time.perf_counter()
    await asyncio.to_thread(procs.stop, workers, 30.0)
    fresh = await start(procs, engines, path, args, [w.target for w in workers], version="v1")
    await routing_to_all(router, len(fresh), "v1")
    return time.perf_counter() - t0, fresh


async def measure(way: str, procs: Procs, workers: list[Proc], engines: list[str], path: Path, args):
    tokenizer = await procs.tokenizer()
    router = await procs.router(workers, tokenizer, "least_load", extra=["--queue-timeout-s", "60"])
    load, counter = Load(), itertools.count()
    clients = [
        asyncio.create_task(client_loop(router.target, load, counter)) for _ in workers for _ in range(args.clients)
    ]
    await asyncio.sleep(args.warm_s)
    before_ok, before_failed = load.ok, load.failed
    if way == "in place":
        wall, loads = await in_place(router.target, path)
    else:
        wall, workers = await restart(procs, workers, engines, path, args, router.target)
        loads = []
    during_ok, during_failed = load.ok - before_ok, load.failed - before_failed
    load.running = False
    await asyncio.gather(*clients, return_exceptions=True)
    say(f"{way}: {wall:.2f} s, {during_failed} failed, errors {sorted(set(load.errors))[:4]}")
    procs.stop([router, tokenizer], 10.0)
    return wall, during_ok, during_failed, loads, workers


async def run(args: argparse.Namespace) -> int:
    engines = ["sim"] * args.sim_workers + ["torch"] * args.torch_workers
    with tempfile.TemporaryDirectory() as tmp:
        path = checkpoint(Path(tmp) / "v1")
        procs = Procs(Path(tmp) / "logs", TINY)
        try:
            workers = await start(procs, engines, TINY, args, [f"127.0.0.1:{free_port()}" for _ in engines])
            place = await measure("in place", procs, workers, engines, path, args)
            workers = await start(procs, engines, TINY, args, [f"127.0.0.1:{free_port()}" for _ in engines])
            procs.stop(place[4], 10.0)
            peer = await measure("restart", procs, workers, engines, path, args)
        finally:
            procs.stop()
    rows = [
        [name, f"{w:.2f}", ok, failed]
        for name, (w, ok, failed, _, _) in (("in place (router Admin.UpdateWeights)", place), ("restart", peer))
    ]
    print(
        f"Fleet weight update under load: {args.sim_workers} sim (tiny-cpu, time scale {args.sim_time_scale:g}) + "
        f"{args.torch_workers} torch workers on the tiny MiMo, {args.clients} client(s) per worker sending 8-token "
        "Generate calls through one router\n"
        + table(["way", "update to all on v1 (s)", "requests served meanwhile", "failed"], rows)
    )
    print(f"per-worker UpdateWeights load_s: {', '.join(f'{x:.3f}' for x in place[3])}")
    print(f"restart / in place: {ratio(peer[0], place[0]):.2f}; failed requests in place: {place[2]} (target 0)")
    return 0 if place[2] == 0 else 1


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mimo-serve bench weights", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--sim-workers", type=int, default=4)
    p.add_argument("--torch-workers", type=int, default=2)
    p.add_argument("--clients", type=int, default=2, help="concurrent clients per worker")
    p.add_argument("--sim-time-scale", type=float, default=0.1, help="scales the sim's modelled 8 s load time")
    p.add_argument("--warm-s", type=float, default=2.0, help="load before the update starts")
    p.add_argument("--quick", action="store_true", help="1 sim + 1 torch worker")
    args = p.parse_args(argv)
    if args.quick:
        args.sim_workers, args.torch_workers = 1, 1
    return asyncio.run(run(args))
