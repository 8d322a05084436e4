"""Local stacks for router tests: real processes on loopback (tokenizer service, sim workers, router)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
from mimo_client.v1 import inference_pb2_grpc, rollout_pb2_grpc
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.stack import Stack, random_ports_plan

SIM_PROFILE = (
    Path(__file__).resolve().parents[2] / "services" / "worker" / "engines" / "sim" / "profiles" / "tiny-cpu.json"
)


@contextlib.asynccontextmanager
async def sim_stack(
    model_dir: Path,
    log_dir: Path,
    num_workers: int = 2,
    time_scale: float = 1.0,
    router_args: Sequence[str] = (),
    with_verifier: bool = False,
    worker_args: Sequence[str] = (),
) -> AsyncIterator[Stack]:
    plan = random_ports_plan(
        model_dir,
        engine="sim",
        num_workers=num_workers,
        worker_args=("--profile", str(SIM_PROFILE), "--time-scale", str(time_scale), *worker_args),
        router_args=("--health-interval-s", "0.5", *router_args),
    )
    specs = [s for s in plan.specs() if with_verifier or s.name != "verifier"]
    stack = Stack(specs, log_dir)
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()


def inference_stub(channel: grpc.aio.Channel) -> inference_pb2_grpc.InferenceStub:
    return inference_pb2_grpc.InferenceStub(channel)


def rollout_stub(channel: grpc.aio.Channel) -> rollout_pb2_grpc.RolloutStub:
    return rollout_pb2_grpc.RolloutStub(channel)


async def worker_load(target: str) -> pb.SchedulerLoad:
    async with grpc.aio.insecure_channel(target) as channel:
        loads = await pb_grpc.SglangSchedulerStub(channel).GetLoads(pb.GetLoadsRequest(), timeout=5)
    return loads.loads[0]


def http_base_url(stack: Stack) -> str:
    """The router's OpenAI HTTP API, e.g. http://127.0.0.1:PORT/v1 (the stack plan passes --http-listen)."""
    args = stack.child("router").spec.args
    return f"http://{args[args.index('--http-listen') + 1]}/v1"
