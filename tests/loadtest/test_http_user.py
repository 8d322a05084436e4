"""The locust HTTP user against a sim stack's OpenAI HTTP API (real locust process, headless): its calls succeed and
streams report TTFT, ITL and TPOT rows beside the calls."""

from __future__ import annotations

import asyncio
import csv
import sys

import pytest

from tests.support.router_stack import http_base_url, sim_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def test_http_user_reports_calls_and_stream_timings(model_dir, tmp_path):
    async with sim_stack(model_dir, tmp_path / "logs", num_workers=1, time_scale=0.2) as stack:
        host = http_base_url(stack).removesuffix("/v1")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "locust", "-f", "loadtest/http_user.py", "--host", host, "--headless",
            "-u", "2", "-r", "2", "-t", "4s", "--csv", str(tmp_path / "run"), "--only-summary",
            "--mimo-max-new-tokens", "8",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(process.communicate(), 120)
    with open(tmp_path / "run_stats.csv") as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    text = out.decode(errors="replace")
    for name in ("HTTP chat", "HTTP chat_stream", "HTTP chat_stream ttft", "HTTP chat_stream itl"):
        assert name in rows and int(rows[name]["Request Count"]) > 0, text[-2000:]
    assert int(rows["Aggregated"]["Failure Count"]) == 0, text[-2000:]
    assert rows["HTTP chat_stream ttft"]["Type"] == "stream" and rows["HTTP chat"]["Type"] == "grpc"
