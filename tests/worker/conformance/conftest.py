"""Fixtures of the worker-protocol conformance suite: one real gRPC worker per engine kind.

To run the suite against another engine, add one line to ENGINE_FACTORIES: a name and an async
function (model_dir) -> Engine. Every test in this folder then runs against it too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.common.config import ServerSettings
from services.common.server import start
from services.worker.engine_api import Engine
from services.worker.engines.sim.engine import SimEngine
from services.worker.engines.sim.profile import SimProfile
from services.worker.engines.sim.synthetic_model import write_synthetic_model
from services.worker.server import build_service
from tests.support.torch_engine import make_torch_engine

REPO = Path(__file__).resolve().parents[3]
TINY_MIMO = REPO / "models" / "tiny-mimo"


async def make_sim_engine(model_dir: Path) -> Engine:
    # Small steps so a 200-token stream lasts long enough to be aborted mid-way, yet tests stay fast.
    profile = SimProfile(name="conformance", decode_base_s=0.004, decode_per_request_s=1e-4, kv_capacity_tokens=200_000)
    return SimEngine(profile, model_dir, time_scale=1.0)


ENGINE_FACTORIES: dict[str, Callable[[Path], Awaitable[Engine]]] = {
    "sim": make_sim_engine,
    "torch": make_torch_engine,
}


@dataclass(frozen=True, slots=True)
class Worker:
    stub: pb_grpc.SglangSchedulerStub
    channel: grpc.aio.Channel
    engine: Engine
    port: int
    model_dir: Path


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if (TINY_MIMO / "tokenizer.json").is_file():
        return TINY_MIMO
    return write_synthetic_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(params=sorted(ENGINE_FACTORIES))
def engine_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def worker(engine_kind: str, model_dir: Path) -> AsyncIterator[Worker]:
    engine = await ENGINE_FACTORIES[engine_kind](model_dir)
    settings = ServerSettings(service="worker", listen="127.0.0.1:0", metrics_port=None, grace_s=1.0)
    running = await start(settings, build_service(engine))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield Worker(pb_grpc.SglangSchedulerStub(channel), channel, engine, running.port, model_dir)
    finally:
        await channel.close()
        await running.drain()
