"""`mimo-serve bench verifier` still runs end to end (a smoke test on a tiny workload, not a timing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import verifier as bench

DATA = Path(__file__).parent / "data" / "math_pairs.jsonl"


def test_bench_prints_both_ratios_last(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = tmp_path / "pairs.jsonl"
    small.write_text("\n".join(DATA.read_text().splitlines()[:24]) + "\n")
    argv = [
        "--rounds",
        "1",
        "--math-data",
        str(small),
        "--code-tasks",
        "2",
        "--tests-per-task",
        "2",
        "--processes",
        "1",
    ]
    assert bench.main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("verifier: math ") and "-> ratio" in last and "; code " in last
    assert json.loads(small.read_text().splitlines()[0])["plain"] in (True, False)
