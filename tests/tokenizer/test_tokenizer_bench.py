"""`mimo-serve bench tokenizer` runs end to end and ends with the headline ratio (the figure itself is not tested)."""

from __future__ import annotations

import re
from pathlib import Path

from bench import main as bench_main


def test_bench_prints_rounds_and_headline_last(fixture_dir: Path, capsys):
    argv = ["tokenizer", "--model", str(fixture_dir), "--rounds", "2", "--batches", "2", "--batch-size", "4"]
    assert bench_main([*argv, "--text-chars", "200", "--concurrency", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"\s+2\s+\S+\s+\S+\s+\d+\.\d\d", lines[-3])  # the table's last round
    assert re.fullmatch(r"tokenizer encode: service \S+ tok/s vs in-process \S+ tok/s -> ratio \d+\.\d\d", lines[-1])
