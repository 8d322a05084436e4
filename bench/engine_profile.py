"""Where an engine step's time goes, on CUDA: torch.profiler over a few warm steps of one scenario.

    python -m bench.engine_profile --random 7b --scenario mixed     # 32 streams decode beside an 8K prompt
    python -m bench.engine_profile --random 7b --scenario decode    # batch-1 decode
    python -m bench.engine_profile --random 7b --scenario prefill   # 64 x 4,096-token prompts, chunked
    python -m bench.engine_profile --scenario steady --batches 1,16,64  # MTP off / always / auto, no profiler

Prints each profiled step's wall time and what it held, then the ops with the most self CPU time and
the kernels with the most GPU time (the two tables answer "host-bound or device-bound?"). `steady` instead
times overlapped decode steps with nothing between them (no syncs, no profiler): each MTP mode's step
time, tokens a sequence a step and time a token, at each batch size, past prefill, tails and graph captures.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import torch
from torch.profiler import ProfilerActivity, profile

from bench.engine import build_model, sync
from bench.engine_serving import make_core, random_ids
from services.worker.engine_api import GenerateInput, SamplingConfig
from services.worker.engines.torch.core import CoreConfig, EngineCore
from services.worker.model.mimo import MiMoForCausalLM


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.engine_profile", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="models/tiny-mimo")
    p.add_argument("--random", choices=["7b"], default=None)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--mtp-layer", action="store_true")
    p.add_argument("--scenario", choices=["decode", "mixed", "prefill", "steady"], default="mixed")
    p.add_argument("--batches", default="1,16,64", help="steady: batch sizes")
    p.add_argument(
        "--prompt-tokens", type=int, default=1040, help="steady: prompt length (contexts stay in one graph width)"
    )
    p.add_argument("--budget", type=int, default=512, help="per-step token budget (chunked prefill)")
    p.add_argument("--steps", type=int, default=6, help="steps profiled")
    p.add_argument("--rows", type=int, default=25)
    return p.parse_args(argv)


def setup(core_of, vocab: int, scenario: str, budget: int) -> EngineCore:
    """An engine in the scenario's steady state, warm (graphs captured, kernels compiled)."""
    forever = SamplingConfig(temperature=0.0, max_new_tokens=100_000, ignore_eos=True)
    if scenario == "decode":
        core = core_of(4096, budget)
        core.add_request(GenerateInput("s0", random_ids(512, vocab, 0), forever))
        for _ in range(20):
            core.step()
        return core
    if scenario == "mixed":
        core = core_of(32 * 1200 + 3 * 8192, budget)
        for i in range(32):
            core.add_request(GenerateInput(f"s{i}", random_ids(512, vocab, i), forever))
        for _ in range(60):
            core.step()
        core.add_request(GenerateInput("warm", random_ids(8192, vocab, 100), SamplingConfig(max_new_tokens=1)))
        while core.scheduler.waiting or any(s.request_id == "warm" for s in core.scheduler.running):
            core.step()
        core.add_request(GenerateInput("long", random_ids(8192, vocab, 101), SamplingConfig(max_new_tokens=1)))
        for _ in range(3):
            core.step()
        return core
    core = core_of(64 * 4200 + 4096, budget)
    for i in range(64):
        core.add_request(GenerateInput(f"p{i}", random_ids(4096, vocab, i), SamplingConfig(max_new_tokens=1)))
    for _ in range(3):
        core.step()
    return core


def steady(model: MiMoForCausalLM, device: str, batch: int, prompt: int, warm: int = 100, steps: int = 300) -> None:
    """`batch` greedy streams of random `prompt`-token prompts, `warm` steps, then `steps` timed steps in each MTP
    mode (off: an engine without MTP; always; auto: the policy's choice)."""
    vocab = model.config.vocab_size
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=2 * (warm + steps) + 8, ignore_eos=True)
    for label, mode in (("off", None), ("always", "always"), ("auto", "auto")):
        blocks = batch * -(-(prompt + sampling.max_new_tokens + 3) // 16) + 64
        cfg = CoreConfig(num_blocks=blocks, is_mtp_enabled=mode is not None, max_context_length=model.config.max_position_embeddings)  # fmt: skip
        core = EngineCore(model, cfg)
        core.runner.spec_policy.mode = mode or "never"
        for i in range(batch):
            core.add_request(GenerateInput(f"s{i}", random_ids(prompt, vocab, i), sampling))
        for _ in range(warm):
            core.step()
        sync(device)
        start, tokens = time.perf_counter(), 0
        for _ in range(steps):
            tokens += sum(len(c.token_ids) for _, c in core.step())
        sync(device)
        wall = time.perf_counter() - start
        print(f"b{batch} MTP {label:6s}: {wall / steps * 1e3:.3f} ms a step, {tokens / steps / batch:.2f} tokens a "
              f"sequence a step, {wall / tokens * batch * 1e3:.3f} ms a token", flush=True)  # fmt: skip
        if mode == "auto":
            print(f"    policy: {core.runner.spec_policy.summary()}", flush=True)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    torch.set_grad_enabled(False)
    dtype = torch.bfloat16 if args.dtype == "auto" else getattr(torch, args.dtype)
    model = build_model(args, dtype)
    vocab = model.config.vocab_size
    if args.scenario == "steady":
        for batch in args.batches.split(","):
            steady(model, args.device, int(batch), args.prompt_tokens)
        return 0
    core = setup(lambda tokens, budget: make_core(model, tokens, budget), vocab, args.scenario, args.budget)
    is_cuda = args.device.startswith("cuda")
    for _ in range(args.steps):  # the same kind of step without the profiler's overhead: wall time vs GPU time
        sync(args.device)
        start = time.perf_counter()
        core.step()
        sync(args.device)
        print(f"unprofiled step: {(time.perf_counter() - start) * 1e3:.2f} ms", flush=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if is_cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            batch = len(core.scheduler.running)
            sync(args.device)
            start = time.perf_counter()
            core.step()
            sync(args.device)
            fed = sum(s.num_scheduled_tokens for s in core.scheduler.running)
            print(f"step: {(time.perf_counter() - start) * 1e3:.2f} ms, {batch} running, {fed} tokens fed", flush=True)
    table = prof.key_averages()
    print(table.table(sort_by="self_cpu_time_total", row_limit=args.rows), flush=True)
    if is_cuda:
        print(table.table(sort_by="self_cuda_time_total", row_limit=args.rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
