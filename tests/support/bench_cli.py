"""Run `mimo-serve bench PART` as a person would (a real process) and read its tables back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HAS_SMG = Path(sys.executable).with_name("smg").exists()


def bench(*argv: str, timeout_s: float = 240) -> list[str]:
    """The bench's stdout lines; fails the test (with the output's tail) unless it exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "bench", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout.strip().splitlines()


def rows(lines: list[str], header: str) -> list[list[str]]:
    """The rows of the table whose header line starts with `header`, split on runs of 2+ spaces."""
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    out = []
    for line in lines[start + 2 :]:
        is_summary = ":" in re.split(r"\s{2,}", line.strip())[0]  # a note or ratio line under the table
        if not line.strip() or not line[0].isalnum() or is_summary:
            break
        out.append(re.split(r"\s{2,}", line.strip()))
    return out
