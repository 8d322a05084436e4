"""`mimo-serve bench sim`: one sim worker pinned to one core under N concurrent streams.

The worker runs as a subprocess under `taskset -c CPU`; this process opens N streaming Generate calls
at once and counts tokens, errors and time to first token. The peer, measured in the same run, is the
latency model itself: the same workload through an in-process SimEngine with time_scale 0 gives the
model time it should take, so `ratio` = achieved tokens/s over the model's tokens/s (1.0: the worker
keeps pace with its own model at this concurrency on one core; below 1: the CPU is the bottleneck).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.common.net import free_port
from services.worker.engine_api import GenerateInput, SamplingConfig
from services.worker.engines.sim.engine import SimEngine
from services.worker.engines.sim.profile import DEFAULT_PROFILE, SimProfile, load_profile
from services.worker.engines.sim.synthetic_model import write_synthetic_model

SERVICE = "sglang.grpc.scheduler.SglangScheduler"


@dataclass(frozen=True, slots=True)
class StreamResult:
    ttft_s: float
    tokens: int
    error: str = ""


def _prompt(i: int, n: int, vocab: int) -> list[int]:
    return [(i * 7919 + j * 104729) % (vocab - 10) + 5 for j in range(n)]


async def _stream(stub: pb_grpc.SglangSchedulerStub, i: int, args: argparse.Namespace, vocab: int) -> StreamResult:
    params = pb.SamplingParams(
        temperature=0, top_p=1, top_k=-1, repetition_penalty=1, n=1, max_new_tokens=args.max_new_tokens, ignore_eos=True
    )
    req = pb.GenerateRequest(
        request_id=f"bench-{i}",
        tokenized=pb.TokenizedInput(input_ids=_prompt(i, args.prompt_tokens, vocab)),
        sampling_params=params,
        stream=True,
    )
    t0, ttft, tokens = time.perf_counter(), 0.0, 0
    try:
        async for msg in stub.Generate(req, timeout=args.timeout_s):
            if msg.WhichOneof("response") == "chunk" and msg.chunk.token_ids:
                ttft = ttft or time.perf_counter() - t0
                tokens += len(msg.chunk.token_ids)
    except grpc.aio.AioRpcError as e:
        return StreamResult(ttft, tokens, e.code().name)
    return StreamResult(ttft, tokens, "" if tokens == args.max_new_tokens else f"short:{tokens}")


async def _wait_serving(port: int, proc: subprocess.Popen[bytes]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}")
            try:
                if (await health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=1)).status == 1:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("worker never became SERVING")


async def _drive(port: int, args: argparse.Namespace, vocab: int) -> tuple[list[StreamResult], float]:
    options = [("grpc.max_concurrent_streams", 0)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = pb_grpc.SglangSchedulerStub(channel)
        t0 = time.perf_counter()
        results = await asyncio.gather(*(_stream(stub, i, args, vocab) for i in range(args.streams)))
        return list(results), time.perf_counter() - t0


async def _model_time(args: argparse.Namespace, model_dir: Path) -> float:
    """The latency model's own duration for the workload (in-process, time_scale 0)."""
    engine = SimEngine(_profile(args), model_dir, time_scale=0)
    await engine.start()
    vocab = engine.model_info().vocab_size
    sampling = SamplingConfig(temperature=0, max_new_tokens=args.max_new_tokens, ignore_eos=True)

    async def one(i: int) -> None:
        async for _ in engine.generate(GenerateInput(f"m{i}", tuple(_prompt(i, args.prompt_tokens, vocab)), sampling)):
            pass

    await asyncio.gather(*(one(i) for i in range(args.streams)))
    await engine.stop()
    return engine.simulated_s


def _profile(args: argparse.Namespace) -> SimProfile:
    return load_profile(args.profile).with_overrides(max_running_requests=args.max_running or args.streams)


def _worker_cmd(args: argparse.Namespace, model_dir: Path, port: int) -> list[str]:
    cmd = [sys.executable, "-m", "services.cli", "worker", "--engine", "sim", "--model", str(model_dir)]
    cmd += [
        "--profile",
        str(args.profile),
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics-port",
        "-1",
        "--log-level",
        "WARNING",
    ]
    cmd += ["--max-running-requests", str(args.max_running or args.streams), "--time-scale", str(args.time_scale)]
    return ["taskset", "-c", str(args.cpu), *cmd] if shutil.which("taskset") else cmd


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="mimo-serve bench sim", description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--profile", default=str(DEFAULT_PROFILE))
    parser.add_argument("--max-running", type=int, help="running batch cap (default: --streams, so all stream at once)")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--cpu", type=int, default=0, help="the core the worker is pinned to")
    parser.add_argument("--model", help="model dir with tokenizer files (default: a synthetic one)")
    parser.add_argument("--timeout-s", type=float, default=300.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model).resolve() if args.model else write_synthetic_model(Path(tmp) / "model")
        model_s = asyncio.run(_model_time(args, model_dir))
        port = free_port()
        proc = subprocess.Popen(_worker_cmd(args, model_dir, port), env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            asyncio.run(_wait_serving(port, proc))
            vocab = SimEngine(_profile(args), model_dir).model_info().vocab_size
            results, wall_s = asyncio.run(_drive(port, args, vocab))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return _report(args, results, wall_s, model_s)


def _report(args: argparse.Namespace, results: list[StreamResult], wall_s: float, model_s: float) -> int:
    ok = [r for r in results if not r.error]
    errors = len(results) - len(ok)
    tokens = sum(r.tokens for r in results)
    ttfts = sorted(r.ttft_s for r in ok) or [0.0]
    achieved, model = tokens / wall_s, tokens / model_s if model_s else float("inf")
    print(
        f"{'streams':<24}{args.streams} concurrent, {args.prompt_tokens} prompt + {args.max_new_tokens} new tokens each"
    )
    print(
        f"{'worker':<24}1 process pinned to cpu {args.cpu} (taskset), time_scale {args.time_scale}, profile {Path(args.profile).name}"
    )
    print(
        f"{'completed / errors':<24}{len(ok)} / {errors}"
        + (f"  (e.g. {next(r.error for r in results if r.error)})" if errors else "")
    )
    print(f"{'wall / model time':<24}{wall_s:.2f} s / {model_s:.2f} s")
    print(
        f"{'TTFT p50 / p99':<24}{statistics.median(ttfts) * 1e3:.0f} ms / {ttfts[int(0.99 * (len(ttfts) - 1))] * 1e3:.0f} ms"
    )
    print(
        f"sim worker, {args.streams} streams on 1 core: {len(ok)}/{len(results)} ok, "
        f"{achieved:,.0f} tok/s vs latency model {model:,.0f} tok/s -> ratio {achieved / model:.2f}"
    )
    return 0 if errors == 0 else 1
