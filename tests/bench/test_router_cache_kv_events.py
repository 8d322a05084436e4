"""Smoke test of `mimo-serve bench router --parts cache`: the KV-event rows (ours --kv-events, SMG's default
event-built index) run beside the others, and SMG's own counters show it applied the sim workers' KV events.
Tiny settings, real processes (sim workers, our routers, SMG); it times nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HAS_SMG = Path(sys.executable).with_name("smg").exists()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMG, reason="smg is not installed")
def test_cache_part_runs_the_kv_event_rows_and_smg_applies_the_workers_events():
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "bench", "router", "--quick", "--parts", "cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("router policy"))
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[start + 2 : start + 8]]
    assert [r[0] for r in rows] == [
        "ours cache_aware",
        "ours cache_aware kv-events",
        "ours round_robin",
        "smg cache_aware kv-events",
        "smg cache_aware hash",
        "smg round_robin",
    ]
    assert all(r[-1] == "0" for r in rows)  # no request failed
    counters = next(
        line for line in lines if line.startswith("smg cache_aware kv-events, SMG's own counters during its runs:")
    )
    stored = re.search(r"blocks stored (\d+)", counters)
    applied = re.search(r"batches applied (\d+)", counters)
    assert stored and applied and int(stored[1]) > 0 and int(applied[1]) > 0, counters
