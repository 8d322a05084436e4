"""Smoke tests of `mimo-serve bench sim`, `bench engine` and `bench weights`: tiny settings, real processes.

The other parts have theirs beside the code they measure (tests/router/test_router_bench.py,
test_http_bench.py, tests/tokenizer, tests/verifier, tests/operators); `bench vllm` needs `make vllm-venv` and is
covered by tests/worker/test_vllm_parity.py. These check that each part runs to its headline with nothing
failed; they time nothing.
"""

from __future__ import annotations

import re

import pytest

from tests.support.bench_cli import REPO, bench

TINY_MIMO = REPO / "models" / "tiny-mimo"
PARTS = ["router", "http", "rollout", "verifier", "tokenizer", "engine", "sim", "autoscaler", "weights", "vllm"]


@pytest.mark.parametrize("part", PARTS)
def test_every_part_answers_help(part):
    lines = bench(part, "--help", timeout_s=60)
    assert lines[0].startswith(f"usage: mimo-serve bench {part}")


def test_sim_bench_serves_every_stream_and_prints_the_ratio_last():
    lines = bench("sim", "--streams", "4", "--max-new-tokens", "16", "--timeout-s", "60")
    assert re.fullmatch(
        r"sim worker, 4 streams on 1 core: 4/4 ok, \d+ tok/s vs latency model \d+ tok/s -> ratio [\d.]+", lines[-1]
    )


def test_engine_bench_on_the_tiny_model_prints_ours_against_hf_last():
    if not (TINY_MIMO / "model.safetensors").exists():
        pytest.fail(f"{TINY_MIMO} has no model.safetensors: train it with models/tiny-mimo/train.py")
    lines = bench(
        *("engine", "--model", str(TINY_MIMO), "--device", "cpu", "--batches", "1"),
        *("--prompt-tokens", "8", "--new-tokens", "8", "--rounds", "1", "--modes", "off", "--threads", "1"),
    )
    assert re.fullmatch(
        r"engine batch 1: ours MTP off [\d.]+ tok/s vs HF generate [\d.]+ tok/s -> ratio [\d.]+", lines[-1]
    )


@pytest.mark.slow
def test_weights_bench_quick_updates_in_place_with_nothing_failed():
    lines = bench("weights", "--quick", "--sim-time-scale", "0.1", "--warm-s", "1", "--clients", "1", timeout_s=300)
    assert re.fullmatch(r"restart / in place: [\d.]+; failed requests in place: 0 \(target 0\)", lines[-1]), lines[-8:]


def test_engine_bench_refuses_an_unknown_ttft_variant_naming_the_flag(capsys):
    """A typo in `--ttft-ab` is an argument error before the (long) model build, not a crash midway."""
    from bench.engine import parse_args

    assert parse_args(["--ttft-ab", "eager,serial"]).ttft_ab == ["eager", "serial"]
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--ttft-ab", "eager,eagr"])
    assert exit_info.value.code == 2
    assert "--ttft-ab: eagr (choose from eager, serial)" in capsys.readouterr().err
