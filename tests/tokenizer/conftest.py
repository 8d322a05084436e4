"""The tokenizer directories to test against (tests/support/tokenizer_dirs.py), and a tokenizer server on each."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from mimo_client.v1 import tokenizer_pb2_grpc

from services.common.config import ServerSettings
from services.common.server import RunningServer, start
from services.text.artifacts import LoadedTokenizer
from services.tokenizer.metrics import METRICS
from services.tokenizer.server import build_service
from tests.support.tokenizer_dirs import TEST_LIMITS, fixture_dir, loaded, model_dir

__all__ = ["fixture_dir", "loaded", "model_dir", "server", "stub"]


@pytest.fixture
async def server(loaded: LoadedTokenizer) -> AsyncIterator[RunningServer]:
    settings = ServerSettings(service="tokenizer", listen="127.0.0.1:0", grace_s=1.0)
    running = await start(settings, build_service(loaded, TEST_LIMITS, METRICS, chunk_bytes=4096))
    yield running
    await running.drain()


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[tokenizer_pb2_grpc.TokenizerStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield tokenizer_pb2_grpc.TokenizerStub(channel)
