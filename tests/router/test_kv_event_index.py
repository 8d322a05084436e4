"""The router's KV-event index follows a real sim worker's SubscribeKvEvents stream over gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc
from smg_grpc_proto.generated import common_pb2
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.common.config import ServerSettings
from services.common.server import start
from services.router.kv_events import KvEventIndex, KvEventSubscriber
from services.worker.engines.sim.engine import SimEngine
from services.worker.engines.sim.profile import SimProfile
from services.worker.engines.sim.synthetic_model import write_synthetic_model
from services.worker.server import build_service


async def eventually(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_index_matches_what_the_worker_cached_and_follows_a_flush(tmp_path: Path) -> None:
    model_dir = write_synthetic_model(tmp_path / "model", max_context_length=4096)
    profile = SimProfile(decode_base_s=0.001)
    page = profile.page_size_tokens
    settings = ServerSettings(service="worker", listen="127.0.0.1:0", metrics_port=None, grace_s=0.5)
    worker = await start(settings, build_service(SimEngine(profile, model_dir, time_scale=0.0)))
    url = f"127.0.0.1:{worker.port}"
    index = KvEventIndex()
    async with grpc.aio.insecure_channel(url) as channel:
        subscriber = KvEventSubscriber(index, url, channel)
        subscriber.start()
        stub = pb_grpc.SglangSchedulerStub(channel)
        prompt = [9 + i % 40 for i in range(4 * page + 3)]
        params = pb.SamplingParams(temperature=0, max_new_tokens=2, ignore_eos=True)
        req = pb.GenerateRequest(request_id="a", tokenized=pb.TokenizedInput(input_ids=prompt), sampling_params=params)
        _ = [m async for m in stub.Generate(req)]
        await eventually(lambda: index.match(prompt, [url]).get(url) == 4 * page)  # absent until its first event
        other = [500 - i for i in range(3 * page)]
        assert index.match(other, [url, "nowhere:1"]) == {url: 0}  # no events from "nowhere": not known
        assert index.match(prompt[: 2 * page] + other, [url])[url] == 2 * page  # a shared head
        assert (await stub.FlushCache(common_pb2.FlushCacheRequest(timeout_s=10))).success
        await eventually(lambda: index.match(prompt, [url]).get(url) == 0)
        assert subscriber.is_supported
        await subscriber.stop()
    await worker.drain()


def test_a_snapshot_from_a_restarted_worker_resets_the_resume_point() -> None:
    """After a restart a worker counts from 1 again: its snapshot must become the cursor the subscriber resumes
    from, or the next reconnect would ask for a sequence number the new worker has never reached."""
    index = KvEventIndex()
    stored = common_pb2.KvCacheEvent(
        event_id=1, stored=common_pb2.KvBlocksStored(blocks=[common_pb2.KvBlock(block_hash=7, block_size=16)])
    )
    assert index.apply("w", common_pb2.KvEventBatch(sequence_number=500, events=[stored]))
    cleared = common_pb2.KvCacheEvent(event_id=1, cleared=common_pb2.KvCacheCleared())
    assert index.apply("w", common_pb2.KvEventBatch(sequence_number=3, events=[cleared, stored]))
    assert index.sequence("w") == 3
