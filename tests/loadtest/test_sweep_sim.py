"""`python -m loadtest sweep --find` against a local stack (tokenizer, one sim worker with the H200 profile, router).

The sustainable rate it finds must agree within 15% with the profile's own capacity for the same workload,
computed by running the latency model flat out in process (loadtest.capacity). The mix is mimo-code (long
prompts, short outputs): its capacity is a few requests per second at time scale 1, which a loaded 2-core
machine can drive faithfully; a decode-bound mix saturates 256 streams per worker, which it cannot.

That measurement takes three minutes (seven rates of 20 s), so it is a `bench` test (`make test-all`); the
default run has a coarse one of the same bisection on the same profile (three rates of 6 s, ~45 s).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from loadtest import capacity, mixes
from tests.support.router_stack import sim_stack

REPO = Path(__file__).resolve().parents[2]
H200 = REPO / "services" / "worker" / "engines" / "sim" / "profiles" / "mimo-7b-rl-h200.json"

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def sweep(out: Path, *args: str, timeout_s: float = 400) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "loadtest", "sweep", *args, "--out", str(out)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=REPO,
    )
    try:
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return int(process.returncode or 0), stdout.decode()


@pytest.mark.asyncio
async def test_a_coarse_find_brackets_the_h200_profiles_capacity(model_dir, tmp_path):
    """--find over the H200 profile with one midpoint: half the capacity holds, three times it breaks, and the
    rate found is the highest that held. 6 s windows hide an overload of up to ~1.4x (its queue has not grown
    past the TTFT bound yet), so the midpoint (1.22x) may go either way; the 15% test is the bench one below."""
    expected = await capacity.capacity_rps(H200, model_dir, mixes.synthetic("mimo-code", 1500, 0, 2048))
    async with sim_stack(model_dir, tmp_path / "logs", num_workers=1, worker_args=("--profile", str(H200))) as s:
        worker = s.child("worker-0").spec
        code, out = await sweep(
            tmp_path / "report",
            *("--target", s.child("router").spec.target, "--mix", "mimo-code", "--find"),
            *("--min-rate", str(expected / 2), "--max-rate", str(expected * 3), "--bisect-steps", "1"),
            *("--duration-s", "6", "--slo-ttft-ms", "2000", "--min-good", "0.9"),
            *("--worker-metrics", f"http://127.0.0.1:{worker.metrics_port}/metrics"),
            timeout_s=240,
        )
    assert code == 0, out
    data = json.loads((tmp_path / "report" / "sweep.json").read_text())
    rates = data["rates"]
    assert [r["offered_rps"] for r in rates] == pytest.approx([expected / 2, expected * 1.5**0.5, expected * 3])
    held = [r["is_sustainable"] for r in rates]
    assert held[0] and not held[2], out
    assert data["sustainable_rps"] == pytest.approx(rates[1 if held[1] else 0]["offered_rps"])
    assert out.strip().splitlines()[-1].startswith(f"sweep: sustainable rate {data['sustainable_rps']:.3f} req/s")
    assert rates[-1]["workers"]["waiting_max"] > 0  # overload shows in the worker's queue
    assert all(r["workers"]["mtp_accept_rate"] == pytest.approx(0.76, abs=0.05) for r in rates)


@pytest.mark.bench
@pytest.mark.asyncio
@pytest.mark.timeout(600)
async def test_the_sweep_finds_the_h200_profiles_capacity_within_15_percent(model_dir, tmp_path):
    expected = await capacity.capacity_rps(H200, model_dir, mixes.synthetic("mimo-code", 1500, 0, 2048))
    async with sim_stack(model_dir, tmp_path / "logs", num_workers=1, worker_args=("--profile", str(H200))) as s:
        worker = s.child("worker-0").spec
        code, out = await sweep(
            tmp_path / "report",
            *("--target", s.child("router").spec.target, "--mix", "mimo-code", "--find"),
            *("--min-rate", str(expected / 3), "--max-rate", str(expected * 1.8), "--bisect-steps", "5"),
            *("--duration-s", "20", "--slo-ttft-ms", "2000", "--min-good", "0.9"),
            *("--worker-metrics", f"http://127.0.0.1:{worker.metrics_port}/metrics"),
        )
    assert code == 0, out
    data = json.loads((tmp_path / "report" / "sweep.json").read_text())
    found = data["sustainable_rps"]
    print(out, f"profile capacity {expected:.3f} req/s, sweep {found:.3f} req/s, ratio {found / expected:.3f}")
    assert out.strip().splitlines()[-1].startswith(f"sweep: sustainable rate {found:.3f} req/s")
    assert found == pytest.approx(expected, rel=0.15)
    by_rate = {r["offered_rps"]: r for r in data["rates"]}
    top = by_rate[max(by_rate)]
    assert not top["is_sustainable"] and top["workers"]["waiting_max"] > 0  # overload shows in the worker's queue
    assert all(r["workers"]["mtp_accept_rate"] == pytest.approx(0.76, abs=0.05) for r in data["rates"])
    for name in ("report.html", "latency.png", "throughput.png", "cdf.png"):
        assert (tmp_path / "report" / name).stat().st_size > 1000, name


@pytest.mark.asyncio
async def test_fixed_rates_over_the_openai_http_api_report_every_rate_and_the_workers_view(model_dir, tmp_path):
    async with sim_stack(model_dir, tmp_path / "logs", num_workers=1, time_scale=0.5) as s:
        router = s.child("router").spec
        http = router.args[router.args.index("--http-listen") + 1]
        metrics = f"http://127.0.0.1:{s.child('worker-0').spec.metrics_port}/metrics"
        code, out = await sweep(
            tmp_path / "report",
            *("--target", f"http://{http}", "--mix", "short", "--rates", "2,4", "--duration-s", "3"),
            *("--slo-ttft-ms", "5000", "--worker-metrics", metrics),
            timeout_s=120,
        )
    assert code == 0, out
    data = json.loads((tmp_path / "report" / "sweep.json").read_text())
    assert [r["offered_rps"] for r in data["rates"]] == [2.0, 4.0] and data["sustainable_rps"] == 4.0
    for rate in data["rates"]:
        assert rate["num_requests"] > 0 and rate["num_errors"] == 0, rate
        # every request asked for 8..32 tokens with ignore_eos: the usage chunk's count, not the chunks', is kept
        assert 8 <= rate["output_tps"] / rate["throughput_rps"] <= 32
        assert rate["workers"]["generated_tokens"] >= rate["output_tps"] * rate["duration_s"]
        assert rate["ttft_ms"]["p50"] < rate["e2e_ms"]["p50"]
    assert out.strip().splitlines()[-1].startswith("sweep: sustainable rate 4.000 req/s")
