"""KV events: the torch engine's prefix-cache blocks as SMG's SubscribeKvEvents stream, over gRPC on loopback."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from smg_grpc_proto.generated import common_pb2
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.common.config import ServerSettings
from services.common.server import start
from services.worker.engine_api import SamplingConfig
from services.worker.engines.torch import TorchEngine, TorchEngineConfig
from services.worker.engines.torch.block_manager import BlockManager, chain_hash
from services.worker.engines.torch.sequence import Sequence
from services.worker.engines.torch.stop import StopChecker
from services.worker.kv_events import BlocksRemoved, BlockStored, CacheCleared, KvEventLog
from services.worker.server import build_service
from tests.support.torch_engine import write_model_dir

BS = 4


def chain(tokens: list[int]) -> list[int]:
    hashes, h = [], 0
    for i in range(0, len(tokens) - BS + 1, BS):
        h = chain_hash(h, tuple(tokens[i : i + BS]))
        hashes.append(h)
    return hashes


def seq(i: int, tokens: list[int]) -> Sequence:
    s = SamplingConfig(temperature=0.0, max_new_tokens=4)
    return Sequence(i, f"r{i}", 0, tokens, len(tokens), s, 4, StopChecker.build(s, (), 4, None))


def test_blocks_are_announced_once_computed_and_withdrawn_when_evicted() -> None:
    log = KvEventLog(BS)
    blocks = BlockManager(4, BS)
    blocks.events = log
    first = seq(0, list(range(10)))  # two full blocks and a partial one
    blocks.allocate(first)
    blocks.publish_events()
    assert log.sequence_number == 0  # registered but not computed: nothing can hit it yet
    blocks.mark_ready(first, 10)
    blocks.publish_events()
    batch = log._after(0)[0][0]
    assert batch.events == (
        BlockStored(chain([0, 1, 2, 3])[0], None, (0, 1, 2, 3)),
        BlockStored(chain(list(range(8)))[1], chain([0, 1, 2, 3])[0], (4, 5, 6, 7)),
    )
    blocks.free_seq(first)
    blocks.allocate(seq(1, [50 + i for i in range(16)]))  # needs all 4 blocks: both cached ones are evicted
    blocks.publish_events()
    removed = [e for b in log._after(1)[0] for e in b.events]
    assert removed == [BlocksRemoved((chain(list(range(8)))[1],)), BlocksRemoved((chain([0, 1, 2, 3])[0],))]
    blocks.reset_prefix_cache()
    blocks.publish_events()
    assert log._after(2)[0][0].events == (CacheCleared(),)
    assert log.num_live_blocks == 0


def test_a_cursor_from_before_a_restart_gets_a_snapshot_not_silence() -> None:
    """A subscriber resuming at a sequence number this log never reached (the worker restarted and counts
    from 1 again) is sent the live blocks at once; waiting for the count to pass it would hide them all."""
    log = KvEventLog(BS)
    log.record(BlockStored(7, None, (0, 1, 2, 3)))
    log.flush()
    batches, is_snapshot = log._after(500)
    assert is_snapshot and batches[0].events == (CacheCleared(), BlockStored(7, None, (0, 1, 2, 3)))
    assert batches[0].sequence_number == 1
    assert log._after(1) == ([], False)  # caught up: nothing more until the next batch


def test_an_unfinished_prompt_freed_early_is_never_announced() -> None:
    log = KvEventLog(BS)
    blocks = BlockManager(8, BS)
    blocks.events = log
    s = seq(0, list(range(12)))
    blocks.allocate(s)
    blocks.mark_ready(s, 4)  # only the first chunk was scheduled
    blocks.free_seq(s)  # aborted
    blocks.publish_events()
    events = log._after(0)[0][0].events
    assert [type(e) for e in events] == [BlockStored] and log.num_live_blocks == 1


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model"))


@asynccontextmanager
async def serving(model_dir: Path):
    engine = TorchEngine(TorchEngineConfig(model_dir=str(model_dir), block_size=BS, kv_cache_tokens=4096))
    settings = ServerSettings(service="worker", listen="127.0.0.1:0", metrics_port=None, grace_s=1.0)
    running = await start(settings, build_service(engine))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield pb_grpc.SglangSchedulerStub(channel)
    finally:
        await channel.close()
        await running.drain()


async def stored_hashes(stream, want: set[int], timeout_s: float = 60.0) -> tuple[set[int], dict[int, list[int]]]:
    """Read batches until every wanted hash was stored; the stored hashes and their token ids."""
    seen: set[int] = set()
    tokens: dict[int, list[int]] = {}

    async def read() -> None:
        async for batch in stream:
            for event in batch.events:
                if event.WhichOneof("data") == "stored":
                    for block in event.stored.blocks:
                        seen.add(block.block_hash)
                        tokens[block.block_hash] = list(block.token_ids)
            if want <= seen:
                return

    await asyncio.wait_for(read(), timeout_s)
    return seen, tokens


async def test_subscribers_see_a_served_prompt_and_a_late_one_gets_a_snapshot(model_dir: Path) -> None:
    prompt = [5 + i for i in range(14)]  # three full blocks of 4
    want = set(chain(prompt))
    async with serving(model_dir) as stub:
        live = stub.SubscribeKvEvents(common_pb2.SubscribeKvEventsRequest())
        sampling = pb.SamplingParams(temperature=0.0, max_new_tokens=3, ignore_eos=True)
        req = pb.GenerateRequest(
            request_id="a", tokenized=pb.TokenizedInput(input_ids=prompt), sampling_params=sampling
        )
        _ = [m async for m in stub.Generate(req)]
        seen, tokens = await stored_hashes(live, want)
        assert want <= seen and tokens[chain(prompt)[1]] == prompt[4:8]
        late = stub.SubscribeKvEvents(common_pb2.SubscribeKvEventsRequest())
        first = await asyncio.wait_for(late.read(), 30)
        kinds = [e.WhichOneof("data") for e in first.events]
        assert kinds[0] == "cleared" and want <= {b.block_hash for e in first.events[1:] for b in e.stored.blocks}
        live.cancel()
        late.cancel()
