"""SMG (`pip install smg`) routes an OpenAI chat completion to a sim worker over the worker protocol."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.config import ServerSettings
from services.common.server import start
from services.worker.server import build_service
from services.worker.sglang.launcher import free_port
from services.worker.sim.engine import SimEngine
from services.worker.sim.profile import SimProfile

SMG = Path(sys.executable).parent / "smg"
pytestmark = pytest.mark.skipif(not SMG.exists(), reason="smg is not installed (pip install smg)")


def http(url: str, body: dict | None = None, timeout_s: float = 30.0) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
async def smg_url(sim_model_dir: Path, tmp_path: Path) -> AsyncIterator[str]:
    profile = SimProfile(decode_base_s=0.002, prefill_base_s=0.001)
    settings = ServerSettings(service="worker", listen="127.0.0.1:0", metrics_port=None, grace_s=0.5)
    worker = await start(settings, build_service(SimEngine(profile, sim_model_dir)))
    port, prom = free_port(), free_port()
    cmd = [str(SMG), "launch", "--worker-urls", f"grpc://127.0.0.1:{worker.port}", "--model-path", str(sim_model_dir)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--prometheus-port", str(prom), "--policy", "round_robin"]
    log = (tmp_path / "smg.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            await asyncio.sleep(0.1)
            if proc.poll() is not None:
                pytest.fail(f"smg exited {proc.returncode}: {(tmp_path / 'smg.log').read_text()[-2000:]}")
            try:
                if (await asyncio.to_thread(http, f"{url}/health", None, 1.0))[0] == 200:
                    break
            except OSError:
                continue
        yield url
    finally:
        proc.kill()  # SMG's graceful shutdown takes seconds; nothing to drain here
        proc.wait(timeout=10)
        log.close()
        await worker.drain()


async def test_smg_routes_a_chat_completion_to_the_sim_worker(smg_url: str, sim_model_dir: Path) -> None:
    body = {"model": sim_model_dir.name, "messages": [{"role": "user", "content": "Add 2 and 3."}], "max_tokens": 16}
    for _ in range(100):  # SMG's /health is up before it has registered the worker and loaded its tokenizer
        status, text = await asyncio.to_thread(http, f"{smg_url}/v1/chat/completions", body)
        if status not in (404, 503):
            break
        await asyncio.sleep(0.2)
    assert status == 200, text
    reply = json.loads(text)
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "length" and reply["usage"]["completion_tokens"] == 16
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"].strip()
    assert reply["usage"]["prompt_tokens"] > 5  # SMG applied the ChatML template and tokenized it
