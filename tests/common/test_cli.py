"""The `mimo-serve` command line lists every part and says which are not built yet."""

from __future__ import annotations

import subprocess
import sys

from services.cli import COMMANDS

PARTS = ["up", "router", "worker", "tokenizer", "verifier", "operator", "demo", "bench"]


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "services.cli", "--help"], capture_output=True, text=True, check=True)
    for part in PARTS:
        assert f"\n    {part}" in out.stdout
    assert list(COMMANDS) == PARTS


def test_unknown_subcommand_is_an_error():
    out = subprocess.run([sys.executable, "-m", "services.cli", "frobnicate"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


def test_each_part_has_help_or_says_not_built():
    for part in PARTS:
        out = subprocess.run(
            [sys.executable, "-m", "services.cli", part, "--help"], capture_output=True, text=True, timeout=120
        )
        assert out.returncode in (0, 2), (part, out.stderr[-2000:])
        assert "usage" in (out.stdout + out.stderr).lower() or "not built yet" in out.stderr, part
