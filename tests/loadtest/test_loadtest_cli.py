"""`python -m loadtest` without a stack: bad flags exit 2, an unreachable service breaks the error bound."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.net import free_port

REPO = Path(__file__).resolve().parents[2]


def loadtest(*args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    """Locust runs in its own process: gevent must never patch the pytest process."""
    cmd = [sys.executable, "-m", "loadtest", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout_s)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--tasks", "verify"], "--tasks verify needs --verifier"),
        (["--tasks", "chat,embed"], "--tasks: unknown ['embed']"),
        (["--max-p95-ms", "ChatStream ttft"], "--max-p95-ms: expected NAME=MS"),
        (["--shape", "step", "--steps", "0"], "--steps must be at least 1"),
        (["--run-time", "0s"], "--run-time must be positive"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(args, message):
    result = loadtest(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr


@pytest.mark.e2e
def test_an_unreachable_verifier_breaks_the_error_bound_with_the_grpc_code(tmp_path):
    summary = tmp_path / "summary.json"
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = loadtest(
        *("--tasks", "verify", "--verifier", dead, "--users", "2", "--spawn-rate", "2", "--run-time", "2s"),
        *("--timeout-s", "2", "--summary-json", str(summary)),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("loadtest: FAIL") and "error rate 100.00%" in last
    data = json.loads(summary.read_text())
    assert {e["name"] for e in data["errors"]} == {"Verify math", "Verify code"}
    assert all(e["error"].startswith("UNAVAILABLE: ") for e in data["errors"])
    assert "grpc Verify math: UNAVAILABLE" in result.stdout
