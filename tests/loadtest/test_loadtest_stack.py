"""Headless load tests against a local stack (tokenizer, sim workers, router; the verifier when it is built)."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.support.router_stack import sim_stack

REPO = Path(__file__).resolve().parents[2]
HAS_VERIFIER = (REPO / "services" / "verifier" / "__main__.py").exists()
MAX_NEW_TOKENS = 24

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(model_dir, tmp_path_factory):
    async with sim_stack(model_dir, tmp_path_factory.mktemp("logs"), time_scale=0.2, with_verifier=HAS_VERIFIER) as s:
        yield s


async def loadtest(tmp_path: Path, *args: str, timeout_s: float = 30) -> tuple[int, str, dict[str, Any]]:
    """Runs `python -m loadtest` in a child process (gevent stays out of pytest): exit code, stdout, summary."""
    summary = tmp_path / "summary.json"
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "loadtest", *args, "--summary-json", str(summary)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=REPO,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = out.decode()
    assert summary.exists(), text
    return int(process.returncode or 0), text, json.loads(summary.read_text())


def rows(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in summary["rows"]}


def short_run(stack, users: int = 4, run_time: str = "3s") -> tuple[str, ...]:
    target = stack.child("router").spec.target
    return ("--target", target, "--users", str(users), "--spawn-rate", str(users), "--run-time", run_time)


async def test_chat_streams_report_ttft_and_itl_and_pass_loose_bounds(stack, tmp_path):
    code, out, summary = await loadtest(
        tmp_path,
        *short_run(stack),
        *("--tasks", "chat,chat_stream", "--max-new-tokens", str(MAX_NEW_TOKENS)),
        *("--max-error-rate", "0", "--max-p95-ms", "ChatStream ttft=60000", "--max-p95-ms", "ChatStream itl=60000"),
    )
    assert code == 0, out
    assert out.strip().splitlines()[-1].startswith("loadtest: PASS")
    by_name = rows(summary)
    for name in ("Chat", "ChatStream", "ChatStream ttft", "ChatStream itl", "ChatStream tpot"):
        assert by_name[name]["count"] > 0 and by_name[name]["failures"] == 0, name
        assert re.search(rf"^(grpc|stream) +{name} +[1-9]", out, re.MULTILINE), f"no table row for {name}"
    stream, ttft, itl = by_name["ChatStream"], by_name["ChatStream ttft"], by_name["ChatStream itl"]
    # The first token comes before the stream ends; a stream has several gaps; tokens per stream are bounded.
    assert ttft["p50_ms"] < stream["p50_ms"] and itl["p50_ms"] < stream["p50_ms"]
    assert itl["count"] > stream["count"]
    assert 1 <= stream["total_length"] / stream["count"] <= MAX_NEW_TOKENS
    assert 'SLO ok     p95 of "ChatStream itl"' in out


async def test_a_broken_p95_bound_exits_nonzero_and_names_the_bound(stack, tmp_path):
    code, out, summary = await loadtest(
        tmp_path,
        *short_run(stack, users=2),
        *("--shape", "step", "--steps", "2", "--tasks", "chat_stream", "--max-p95-ms", "ChatStream ttft=0.001"),
    )
    assert code == 1, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("loadtest: FAIL") and 'p95 of "ChatStream ttft"' in last and "> max 0.001 ms" in last
    assert "error rate" not in last  # only the broken bound is named
    assert [v["bound"] for v in summary["verdicts"] if not v["ok"]] == ['p95 of "ChatStream ttft"']


async def test_rollouts_report_time_to_first_sample_and_judge_the_rewards(stack, tmp_path):
    code, out, summary = await loadtest(
        tmp_path, *short_run(stack, users=2), *("--tasks", "rollout", "--max-new-tokens", "16")
    )
    by_name = rows(summary)
    rollouts, first = by_name["Rollout"], by_name["Rollout first sample"]
    assert rollouts["count"] > 0 and first["count"] >= rollouts["count"]
    assert rollouts["total_length"] == 4 * rollouts["count"]  # 2 prompts x 2 samples, every one reported
    assert first["p50_ms"] < rollouts["p50_ms"]
    if HAS_VERIFIER:
        assert code == 0, out
        assert by_name["Rollout reward wait"]["count"] == 4 * rollouts["count"]
    else:  # the router's verifier is down: rewards come back VERDICT_ERROR, which is a failure, not a zero
        assert code == 1, out
        assert rollouts["failures"] == rollouts["count"]
        assert all("rewards VERDICT_ERROR: verifier unavailable" in e["error"] for e in summary["errors"])


@pytest.mark.skipif(not HAS_VERIFIER, reason="the verifier service (services/verifier/__main__.py) is not built yet")
async def test_verification_reports_math_and_code_rows(stack, tmp_path):
    verifier = stack.child("verifier").spec.target
    code, out, summary = await loadtest(
        tmp_path, *short_run(stack, users=2), *("--tasks", "verify", "--verifier", verifier)
    )
    assert code == 0, out
    by_name = rows(summary)
    for name in ("Verify math", "Verify code"):
        assert by_name[name]["count"] > 0 and by_name[name]["failures"] == 0, name
    assert by_name["Verify math"]["total_length"] == 4 * by_name["Verify math"]["count"]  # a result per task
