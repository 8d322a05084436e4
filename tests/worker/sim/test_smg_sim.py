"""SMG (`pip install smg`) routes an OpenAI chat completion to a sim worker over the worker protocol."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.config import ServerSettings
from services.common.server import start
from services.worker.engines.sim.engine import SimEngine
from services.worker.engines.sim.profile import SimProfile
from services.worker.server import build_service
from tests.support.smg_peer import chat_completion, needs_smg, running_smg

pytestmark = needs_smg


@pytest.fixture
async def smg_url(sim_model_dir: Path, tmp_path: Path) -> AsyncIterator[str]:
    profile = SimProfile(decode_base_s=0.002, prefill_base_s=0.001)
    settings = ServerSettings(service="worker", listen="127.0.0.1:0", metrics_port=None, grace_s=0.5)
    worker = await start(settings, build_service(SimEngine(profile, sim_model_dir)))
    try:
        async with running_smg(worker.port, sim_model_dir, tmp_path / "smg.log") as url:
            yield url
    finally:
        await worker.drain()


async def test_smg_routes_a_chat_completion_to_the_sim_worker(smg_url: str, sim_model_dir: Path) -> None:
    body = {"model": sim_model_dir.name, "messages": [{"role": "user", "content": "Add 2 and 3."}], "max_tokens": 16}
    status, text = await chat_completion(smg_url, body)
    assert status == 200, text
    reply = json.loads(text)
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "length" and reply["usage"]["completion_tokens"] == 16
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"].strip()
    assert reply["usage"]["prompt_tokens"] > 5  # SMG applied the ChatML template and tokenized it
