"""The simulator's shape: prefill cost, prefix hits, batch saturation, KV queueing, MTP, output lengths."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from services.worker.engine_api import GenerateInput, OutputChunk, SamplingConfig
from services.worker.engines.sim.engine import SimEngine
from services.worker.engines.sim.profile import OutputLength, SimProfile


@dataclass
class Run:
    ttft_s: float
    total_s: float
    last: OutputChunk
    chunks: list[OutputChunk]


def prompt(n: int, seed: int) -> tuple[int, ...]:
    rng = random.Random(seed)
    return tuple(rng.randrange(3, 300) for _ in range(n))


async def run(engine: SimEngine, rid: str, ids: tuple[int, ...], max_new: int, **sampling) -> Run:
    s = SamplingConfig(temperature=sampling.pop("temperature", 0.0), max_new_tokens=max_new, **sampling)
    t0 = time.perf_counter()
    ttft, chunks = 0.0, []
    async for chunk in engine.generate(GenerateInput(rid, ids, s)):
        if not chunks:
            ttft = time.perf_counter() - t0
        chunks.append(chunk)
    return Run(ttft, time.perf_counter() - t0, chunks[-1], chunks)


async def started(profile: SimProfile, model_dir: Path, time_scale: float = 1.0) -> SimEngine:
    engine = SimEngine(profile, model_dir, time_scale=time_scale)
    await engine.start()
    return engine


async def test_ttft_grows_with_uncached_prompt_and_drops_on_a_prefix_hit(sim_model_dir: Path) -> None:
    profile = SimProfile(prefill_base_s=0.005, prefill_per_token_s=1e-4, decode_base_s=0.002, is_mtp_enabled=False)
    engine = await started(profile, sim_model_dir)
    try:
        short = await run(engine, "short", prompt(100, 1), 2)
        long = await run(engine, "long", prompt(4000, 2), 2)  # ~0.4 s of prefill
        hit = await run(engine, "hit", prompt(4000, 2), 2)  # same prompt: served from the prefix cache
    finally:
        await engine.stop()
    assert long.ttft_s > 5 * short.ttft_s
    assert hit.ttft_s < long.ttft_s / 5
    assert (long.last.cached_tokens, hit.last.cached_tokens) == (0, 4000 - 4000 % 16)
    assert engine.load().cache_hit_rate > 0.4


async def test_decode_throughput_saturates_as_the_batch_grows(sim_model_dir: Path) -> None:
    profile = SimProfile(
        prefill_base_s=0.002, prefill_per_token_s=1e-6, decode_base_s=0.004, decode_per_request_s=0.0005,
        is_mtp_enabled=False, max_running_requests=256,
    )  # fmt: skip
    engine = await started(profile, sim_model_dir)
    throughput = {}
    try:
        for batch in (1, 16, 128):
            t0 = time.perf_counter()
            runs = await asyncio.gather(
                *(run(engine, f"b{batch}-{i}", prompt(32, 1000 * batch + i), 20, ignore_eos=True) for i in range(batch))
            )
            throughput[batch] = sum(len(r.last.output_ids) for r in runs) / (time.perf_counter() - t0)
    finally:
        await engine.stop()
    assert throughput[16] > 3 * throughput[1]  # batching pays while steps are dominated by the fixed cost
    assert throughput[128] < 2 * throughput[16]  # then the per-request cost takes over: 8x the batch, < 2x the tokens


async def test_a_full_kv_cache_queues_requests_until_capacity_frees(sim_model_dir: Path) -> None:
    profile = SimProfile(decode_base_s=0.002, decode_per_request_s=0, kv_capacity_tokens=1024, is_mtp_enabled=False)
    engine = await started(profile, sim_model_dir)
    try:  # each request needs 200 prompt + 300 reserved output tokens: two fit in 1024
        tasks = [
            asyncio.create_task(run(engine, f"kv{i}", prompt(200, 10 + i), 300, ignore_eos=True)) for i in range(4)
        ]
        await asyncio.sleep(0.1)
        load = engine.load()
        runs = await asyncio.gather(*tasks)
    finally:
        await engine.stop()
    assert (load.running_requests, load.waiting_requests) == (2, 2)
    assert load.used_kv_tokens <= 1024 and load.token_usage > 0.3
    assert all(r.last.finish_reason == "length" and len(r.last.output_ids) == 300 for r in runs)
    first_done = min(r.total_s for r in runs[:2])
    assert min(r.ttft_s for r in runs[2:]) >= first_done * 0.9  # the queued ones started only when KV freed


async def test_mtp_acceptance_sets_tokens_per_step(sim_model_dir: Path) -> None:
    mtp = await started(SimProfile(mtp_accept_rate=0.76), sim_model_dir, time_scale=0)
    plain = await started(SimProfile(is_mtp_enabled=False), sim_model_dir, time_scale=0)
    try:
        runs = await asyncio.gather(*(run(mtp, f"m{i}", prompt(16, i), 200, ignore_eos=True) for i in range(20)))
        plain_run = await run(plain, "p", prompt(16, 99), 50, ignore_eos=True)
    finally:
        await mtp.stop()
        await plain.stop()
    load = mtp.load()
    assert load.spec_accept_length is not None and abs(load.spec_accept_length - 1.76) < 0.05
    assert load.spec_accept_rate is not None and abs(load.spec_accept_rate - 0.76) < 0.05
    accepted = sum(r.last.spec_accepted_tokens for r in runs) / sum(r.last.spec_draft_tokens for r in runs)
    assert abs(accepted - 0.76) < 0.05
    assert {len(c.token_ids) for r in runs for c in r.chunks[1:-1]} == {1, 2}  # one or two tokens per step
    assert plain.load().spec_accept_length is None
    assert {len(c.token_ids) for c in plain_run.chunks} == {1}


async def test_lognormal_output_lengths_end_on_eos_and_repeat_with_a_seed(sim_model_dir: Path) -> None:
    profile = SimProfile(output_length=OutputLength("lognormal", median_tokens=20, sigma=0.5))
    engine = await started(profile, sim_model_dir, time_scale=0)
    eos = engine.model_info().eos_token_ids[0]
    try:
        runs = [await run(engine, f"l{i}", prompt(16, 5), 1000, temperature=1.0, seed=i) for i in range(30)]
        again = await run(engine, "again", prompt(16, 5), 1000, temperature=1.0, seed=3)
    finally:
        await engine.stop()
    lengths = [len(r.last.output_ids) for r in runs]
    assert all(r.last.finish_reason == "stop" and r.last.matched_token_id == eos == r.last.output_ids[-1] for r in runs)
    assert len(set(lengths)) > 5 and 10 <= statistics.median(lengths) <= 40
    assert again.last.output_ids == runs[3].last.output_ids


async def test_overcommitted_kv_retracts_and_still_completes_every_request(sim_model_dir: Path) -> None:
    profile = SimProfile(kv_capacity_tokens=1024, reserve_output_ratio=0.1, is_mtp_enabled=False)
    engine = await started(profile, sim_model_dir, time_scale=0)
    peak = 0
    try:  # 3 x (100 prompt + 400 output) cannot all fit in 1024 tokens, but a 10% reservation admits them all
        tasks = [asyncio.create_task(run(engine, f"r{i}", prompt(100, 40 + i), 400, ignore_eos=True)) for i in range(3)]
        while not all(t.done() for t in tasks):
            peak = max(peak, engine.load().used_kv_tokens)
            await asyncio.sleep(0)
        runs = [t.result() for t in tasks]
    finally:
        await engine.stop()
    assert all(len(r.last.output_ids) == 400 and r.last.finish_reason == "length" for r in runs)
    assert all(
        r.last.output_ids == tuple(t for c in r.chunks for t in c.token_ids) for r in runs
    )  # no token lost or repeated
    assert peak <= 1024
