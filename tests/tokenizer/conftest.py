"""Tokenizer directories to test against (a fixture built here, and models/tiny-mimo when trained), and a server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from mimo_client.v1 import tokenizer_pb2_grpc
from tokenizer_fixtures import TEST_LIMITS, TINY_MIMO, build_fixture_dir

from services.common.config import ServerSettings
from services.common.server import RunningServer, start
from services.tokenizer.artifacts import LoadedTokenizer, load_tokenizer_dir
from services.tokenizer.metrics import METRICS
from services.tokenizer.server import build_service


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture_dir(tmp_path_factory.mktemp("tokenizer") / "fixture-qwen2")


@pytest.fixture(scope="session", params=["fixture", "tiny-mimo"])
def model_dir(request: pytest.FixtureRequest, fixture_dir: Path) -> Path:
    """Each tokenizer directory the service must handle: the fixture, and the trained tiny MiMo when present."""
    if request.param == "fixture":
        return fixture_dir
    if not (TINY_MIMO / "tokenizer.json").is_file():
        pytest.skip("models/tiny-mimo has no tokenizer.json yet")
    return TINY_MIMO


@pytest.fixture(scope="session")
def loaded(model_dir: Path) -> LoadedTokenizer:
    return load_tokenizer_dir(model_dir)


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
