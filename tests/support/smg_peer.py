"""SMG, the Rust gateway (`pip install smg`), as a real peer in front of one of our workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.net import free_port

SMG = Path(sys.executable).parent / "smg"
needs_smg = pytest.mark.skipif(not SMG.exists(), reason="smg is not installed (pip install smg)")


def http(url: str, body: dict | None = None, timeout_s: float = 60.0) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@contextlib.asynccontextmanager
async def running_smg(worker_port: int, model_dir: Path, log_path: Path, start_s: float = 30.0) -> AsyncIterator[str]:
    """`smg launch` in front of the worker on `worker_port`; yields its base URL once /health answers."""
    port, prom = free_port(), free_port()
    cmd = [str(SMG), "launch", "--worker-urls", f"grpc://127.0.0.1:{worker_port}", "--model-path", str(model_dir)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--prometheus-port", str(prom), "--policy", "round_robin"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(int(start_s / 0.1)):
                await asyncio.sleep(0.1)
                if proc.poll() is not None:
                    pytest.fail(f"smg exited {proc.returncode}: {log_path.read_text()[-2000:]}")
                with contextlib.suppress(OSError):
                    if (await asyncio.to_thread(http, f"{url}/health", None, 1.0))[0] == 200:
                        break
            yield url
        finally:
            proc.kill()  # SMG's graceful shutdown takes seconds; nothing to drain here
            proc.wait(timeout=10)


async def chat_completion(url: str, body: dict) -> tuple[int, str]:
    """POST /v1/chat/completions, waiting out SMG's start: /health is up before it has registered the worker and
    loaded its tokenizer (404 model_not_found, 503 tokenizer_not_ready meanwhile)."""
    for _ in range(100):
        status, text = await asyncio.to_thread(http, f"{url}/v1/chat/completions", body)
        if status not in (404, 503):
            break
        await asyncio.sleep(0.2)
    return status, text
