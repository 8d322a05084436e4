"""A real peer: SMG (`pip install smg`) answers an OpenAI chat completion through the torch worker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import jinja2
import pytest
import torch
from tokenizers import Tokenizer

from services.common.config import ServerSettings
from services.common.server import start
from services.worker.engine_api import GenerateInput
from services.worker.engines.torch import TorchEngine, TorchEngineConfig
from services.worker.engines.torch.core import CoreConfig, EngineCore
from services.worker.model import load_mimo
from services.worker.model_info import read_model_info
from services.worker.server import build_service
from tests.support.smg_peer import chat_completion, needs_smg, running_smg
from tests.support.torch_engine import greedy, run_all, tokens_of, write_model_dir

TINY_MIMO = Path(__file__).resolve().parents[3] / "models" / "tiny-mimo"
pytestmark = [pytest.mark.slow, needs_smg]
MESSAGES = [{"role": "user", "content": "What is 12 + 7?"}]
MAX_TOKENS = 96  # enough for the tiny MiMo to finish its answer and stop on <|im_end|>


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if (TINY_MIMO / "model.safetensors").is_file():
        return TINY_MIMO
    return write_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture
async def smg_url(model_dir: Path, tmp_path: Path) -> AsyncIterator[str]:
    settings = ServerSettings(service="worker", listen="127.0.0.1:0", metrics_port=None, grace_s=0.5)
    worker = await start(settings, build_service(TorchEngine(TorchEngineConfig(model_dir=str(model_dir)))))
    try:
        async with running_smg(worker.port, model_dir, tmp_path / "smg.log") as url:
            yield url
    finally:
        await worker.drain()


def direct_greedy_answer(model_dir: Path) -> tuple[str, int, int, str]:
    """(text, prompt tokens, completion tokens, finish reason) from our engine in-process, on the ChatML prompt."""
    template = json.loads((model_dir / "tokenizer_config.json").read_text())["chat_template"]
    prompt = jinja2.Environment().from_string(template).render(messages=MESSAGES, add_generation_prompt=True)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids
    info = read_model_info(model_dir)
    core = EngineCore(
        load_mimo(model_dir, "cpu", torch.float32), CoreConfig(num_blocks=512, eos_token_ids=info.eos_token_ids)
    )
    chunks = run_all(core, [GenerateInput("direct", tuple(ids), greedy(MAX_TOKENS))])[("direct", 0)]
    out = tokens_of(chunks)
    return tokenizer.decode(out, skip_special_tokens=True), len(ids), len(out), str(chunks[-1].finish_reason)


async def test_smg_chat_completion_through_the_torch_worker_equals_direct_greedy(smg_url: str, model_dir: Path) -> None:
    body = {"model": model_dir.name, "messages": MESSAGES, "max_tokens": MAX_TOKENS, "temperature": 0}
    status, text = await chat_completion(smg_url, body)
    assert status == 200, text
    reply = json.loads(text)
    want_text, want_prompt, want_completion, want_finish = await asyncio.to_thread(direct_greedy_answer, model_dir)
    assert reply["choices"][0]["finish_reason"] == want_finish
    assert reply["usage"]["prompt_tokens"] == want_prompt
    assert reply["usage"]["completion_tokens"] == want_completion
    # A random model's stray byte tokens decode to U+FFFD here; SMG drops incomplete characters instead.
    assert reply["choices"][0]["message"]["content"] == want_text.replace("\ufffd", "")
