"""The sim worker's KV events over gRPC: its prefix-cache pages as SMG's SubscribeKvEvents stream."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from smg_grpc_proto.generated import common_pb2
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.common.config import ServerSettings
from services.common.server import start
from services.worker.engines.sim.engine import SimEngine
from services.worker.engines.sim.profile import SimProfile
from services.worker.server import build_service


def chain(tokens: list[int], page: int) -> list[int]:
    """The page hashes any holder of the tokens can compute: hash((parent, page tokens)), 0 first."""
    hashes, h = [], 0
    for i in range(0, len(tokens) - page + 1, page):
        h = hash((h, tuple(tokens[i : i + page])))
        hashes.append(h)
    return hashes


async def test_served_prompt_pages_are_stored_events_and_flush_clears(sim_model_dir: Path) -> None:
    profile = SimProfile(decode_base_s=0.001)
    page = profile.page_size_tokens
    prompt = [7 + i % 50 for i in range(3 * page + 1)]
    settings = ServerSettings(service="worker", listen="127.0.0.1:0", metrics_port=None, grace_s=0.5)
    running = await start(settings, build_service(SimEngine(profile, sim_model_dir, time_scale=0.0)))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = pb_grpc.SglangSchedulerStub(channel)
        events = stub.SubscribeKvEvents(common_pb2.SubscribeKvEventsRequest())
        snapshot = await asyncio.wait_for(events.read(), 30)
        assert [e.WhichOneof("data") for e in snapshot.events] == ["cleared"]  # empty cache at start
        params = pb.SamplingParams(temperature=0, max_new_tokens=2, ignore_eos=True)
        req = pb.GenerateRequest(request_id="a", tokenized=pb.TokenizedInput(input_ids=prompt), sampling_params=params)
        _ = [m async for m in stub.Generate(req)]
        stored: dict[int, tuple[list[int], int]] = {}
        while not set(chain(prompt, page)) <= stored.keys():
            batch = await asyncio.wait_for(events.read(), 30)
            assert batch.sequence_number > snapshot.sequence_number
            for e in batch.events:
                for b in e.stored.blocks:
                    stored[b.block_hash] = (list(b.token_ids), e.stored.parent_block_hash)
        first, second = chain(prompt, page)[:2]
        assert stored[second] == (prompt[page : 2 * page], first)
        assert (await stub.FlushCache(common_pb2.FlushCacheRequest(timeout_s=10))).success
        while True:
            batch = await asyncio.wait_for(events.read(), 30)
            if any(e.WhichOneof("data") == "cleared" for e in batch.events):
                break
        events.cancel()
    await running.drain()
