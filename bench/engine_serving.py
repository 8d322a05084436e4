"""`bench engine` sections beyond steady decode: TTFT of a long prompt beside running streams (chunked
prefill), long contexts (4K-32K) against the weight + KV roofline, and logits against HF at a long context.

Each prints its own ratio against a bound or a peer measured in the same run.
"""

from __future__ import annotations

import statistics
import time
from functools import partial

import torch

from services.worker.engine_api import GenerateInput, SamplingConfig
from services.worker.engines.torch.core import CoreConfig, EngineCore
from services.worker.engines.torch.engine import freeze_start_up_objects
from services.worker.model import MiMoForCausalLM


def matmul_tflops(device: str, size: int = 8192) -> float:
    """bf16 matrix rate on random data (median of 10 products after warm-up): the compute roofline's rate."""
    a = torch.randn(size, size, dtype=torch.bfloat16, device=device)
    b = torch.randn(size, size, dtype=torch.bfloat16, device=device)
    times = []
    for i in range(13):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        a @ b
        end.record()
        end.synchronize()
        if i >= 3:
            times.append(begin.elapsed_time(end) / 1e3)
    return 2 * size**3 / statistics.median(times) / 1e12


def prefill_flops(model: MiMoForCausalLM, num_tokens: int) -> float:
    """Matmul FLOPs of a causal prefill: 2 x (non-embedding) parameters x tokens, plus causal attention."""
    cfg = model.config
    params = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "mtp" not in n)
    attention = 4 * (num_tokens**2 / 2) * cfg.head_dim * cfg.num_attention_heads * cfg.num_hidden_layers
    return 2 * params * num_tokens + attention


def random_ids(num: int, vocab: int, seed: int) -> tuple[int, ...]:
    return tuple(torch.randint(3, vocab, (num,), generator=torch.Generator().manual_seed(seed)).tolist())


def make_core(
    model: MiMoForCausalLM, num_tokens: int, budget: int, running: int = 64, ragged_graphs: bool = True
) -> EngineCore:
    cfg = CoreConfig(num_blocks=num_tokens // 16 + 64, max_running_requests=running, is_mtp_enabled=False,
                     max_batch_tokens=budget, max_context_length=model.config.max_position_embeddings,
                     ragged_graphs=ragged_graphs)  # fmt: skip
    core = EngineCore(model, cfg)
    freeze_start_up_objects()  # as the worker does once its core is built
    return core


def step_times(core: EngineCore, last: dict[str, float], itl: list[float], streams: set[str]) -> set[str]:
    """One step; the inter-token gaps of the given streams; the request ids that got tokens.

    A token is stamped when `step()` hands it to the host, as a server streams it. No device sync here:
    with overlapped decode `step()` returns step k's tokens while k + 1 runs, and a sync would add k + 1
    to the first gap after every non-overlapped step (each such gap read as two decode steps)."""
    out = core.step()
    now, got = time.perf_counter(), set()
    for rid, chunk in out:
        if chunk.token_ids:
            got.add(rid)
            if rid in streams and rid in last:
                itl.append(now - last[rid])
            last[rid] = now
    return got


def ttft_beside_streams(
    model: MiMoForCausalLM,
    prompt: int,
    streams: int,
    budget: int,
    tflops: float,
    stream_prompt: int = 512,
    variant: str = "",
) -> None:
    """`streams` decode; one `prompt`-token request arrives: its TTFT against the compute roofline, and
    the streams' ITL p99 while it prefills against their ITL p99 before it. `variant` 'eager': the prefill
    and mixed steps run eagerly (the engine before they were graphed); 'serial': a mixed step's two attention
    launches one after the other on one stream (the engine before they ran side by side)."""
    from services.worker.engines.torch.kernels import paged_attention as pa

    if variant not in ("", "eager", "serial"):
        raise ValueError(f"ttft variant: {variant!r} is not 'eager' or 'serial'")
    vocab = model.config.vocab_size
    pa.CONCURRENT_MAPS = variant != "serial"  # read when each graph is captured: this core's own
    core = make_core(model, streams * (stream_prompt + 600) + prompt + 1024, budget, ragged_graphs=variant != "eager")
    forever = SamplingConfig(temperature=0.0, max_new_tokens=100_000, ignore_eos=True)
    names = {f"s{i}" for i in range(streams)}
    for i in range(streams):
        core.add_request(GenerateInput(f"s{i}", random_ids(stream_prompt, vocab, i), forever))
    last: dict[str, float] = {}
    while not names <= last.keys():  # admit and prefill (a small budget takes more steps than 40)
        step_times(core, last, [], names)
    for _ in range(8):  # the decode graphs at the streams' width, captured outside the windows
        step_times(core, last, [], names)
    # One long prompt beforehand: the first mixed steps of each shape compile kernels (not TTFT).
    one_token = SamplingConfig(temperature=0.0, max_new_tokens=1)
    core.add_request(GenerateInput("warm", random_ids(prompt, vocab, 998), one_token))
    while "warm" not in step_times(core, last, [], names):
        pass
    before: list[float] = []
    for _ in range(60):
        step_times(core, last, before, names)
    during: list[float] = []
    core.add_request(GenerateInput("long", random_ids(prompt, vocab, 999), one_token))
    start = time.perf_counter()
    while "long" not in step_times(core, last, during, names):
        pass
    ttft = time.perf_counter() - start
    for i in range(streams):
        core.abort_request(f"s{i}")
    pa.CONCURRENT_MAPS = True
    bound = prefill_flops(model, prompt) / (tflops * 1e12)
    p99 = lambda xs: statistics.quantiles(xs, n=100)[98] if len(xs) >= 2 else xs[0]  # noqa: E731
    print(
        f"ttft{f' ({variant})' if variant else ''}: {prompt}-token prompt beside {streams} "
        f"decoding streams, budget {budget} tokens/step: "
        f"TTFT {ttft * 1e3:.0f} ms = {ttft / bound:.2f}x the compute roofline ({bound * 1e3:.0f} ms at "
        f"{tflops:.0f} TFLOP/s); stream ITL p99 {p99(before) * 1e3:.1f} ms before, {p99(during) * 1e3:.1f} ms "
        f"during -> ratio {p99(during) / p99(before):.2f} (median {statistics.median(before) * 1e3:.1f} / "
        f"{statistics.median(during) * 1e3:.1f} ms, {len(during)} gaps)",
        flush=True,
    )


def long_contexts(model: MiMoForCausalLM, contexts: list[int], bandwidth: float, new_tokens: int = 64) -> None:
    """Batch 1 at each context: TTFT (chunked prefill) and decode steps/s against the weight + KV roofline."""
    cfg = model.config
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kv_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * model.lm_head.weight.element_size()
    for length in contexts:
        core = make_core(model, length + new_tokens + 64, 8192)
        sampling = SamplingConfig(temperature=0.0, max_new_tokens=new_tokens, ignore_eos=True)
        for rnd in range(2):  # the first round captures the graphs
            core.add_request(GenerateInput(f"c{rnd}", random_ids(length, cfg.vocab_size, 7 + rnd), sampling))
            torch.cuda.synchronize()
            start, first, steps = time.perf_counter(), 0.0, 0
            while core.has_work:
                got = core.step()
                if got and not first:
                    torch.cuda.synchronize()
                    first = time.perf_counter()
                elif got:
                    steps += 1
            end = time.perf_counter()
        steps_s = steps / (end - first)
        bound = bandwidth / (weight_bytes + (length + new_tokens / 2) * kv_token)
        print(
            f"context {length:6d}: TTFT {(first - start) * 1e3:7.0f} ms, decode {steps_s:6.1f} steps/s = "
            f"{steps_s / bound:.0%} of the weight+KV roofline ({bound:.0f} steps/s)",
            flush=True,
        )
        del core
        torch.cuda.empty_cache()


def logits_vs_hf(model: MiMoForCausalLM, hf, length: int) -> None:
    """Every position's logits of one `length`-token prefill: ours (kernels), ours (exact path) and HF."""
    ids = random_ids(length, model.config.vocab_size, 4242)
    with torch.inference_mode():
        hf_bf16 = hf(torch.tensor([ids], device=hf.device)).logits[0].float()
        hf.float()  # an fp32 copy of the weights (ours stay bf16): the reference both are measured against
        ref = hf(torch.tensor([ids], device=hf.device)).logits[0].float()
        hf.to(torch.bfloat16)
        err = ((hf_bf16 - ref).norm() / ref.norm()).item()
        top1 = (hf_bf16.argmax(-1) == ref.argmax(-1)).float().mean().item()
        print(f"logits at {length} tokens, HF bf16 vs HF fp32: relative error {err:.2e}, top-1 agreement {top1:.2%}")
        for use_kernels in (True, False):
            core = make_core(model, length + 64, length)
            core.runner.use_kernels = core.runner.use_kernels and use_kernels
            core.add_request(GenerateInput("x", ids, SamplingConfig(temperature=0.0, max_new_tokens=1)))
            batch = core.scheduler.schedule()
            assert batch is not None
            step = core.runner.prepare(batch.seqs, [s.pending_tokens() for s in batch.seqs])
            ours = core.runner.logits(core.runner.forward(step)[:length]).float()
            err = ((ours - ref).norm() / ref.norm()).item()
            top1 = (ours.argmax(-1) == ref.argmax(-1)).float().mean().item()
            name = "kernels" if core.runner.use_kernels else "exact  "
            print(f"logits at {length} tokens, ours ({name}) vs HF fp32: relative error {err:.2e}, top-1 agreement "
                  f"{top1:.2%}, max |diff| {(ours - ref).abs().max().item():.3f}", flush=True)  # fmt: skip
            del core


def attention_tiles(device: str) -> None:
    """The prefill kernel's tile shapes on a 512-token chunk and an 8K chunk, both at 8K context (7B heads)."""
    import triton.testing

    from services.worker.engines.torch.kernels.paged_attention import Tiles, paged_attention

    hq, hkv, d, bs, ctx = 32, 8, 128, 16, 8192
    k_cache = torch.randn(ctx, hkv, d, dtype=torch.bfloat16, device=device)
    v_cache = torch.randn_like(k_cache)
    tables = torch.randperm(ctx // bs, device=device)[None]
    for num_q in (512, 8192):
        q = torch.randn(num_q, hq, d, dtype=torch.bfloat16, device=device)
        starts = torch.tensor([0, num_q], device=device)
        lens = torch.tensor([ctx], device=device)
        flops = 4 * d * hq * sum(ctx - num_q + t + 1 for t in range(num_q))
        for tiles in (Tiles(64, 64, 4, 2), Tiles(128, 64, 8, 2), Tiles(128, 64, 8, 3), Tiles(128, 128, 8, 2),
                      Tiles(64, 128, 4, 3), Tiles(128, 32, 4, 3)):  # fmt: skip
            run = partial(paged_attention, q, k_cache, v_cache, tables, starts, lens, bs, num_q, 132, tiles)
            try:
                ms = triton.testing.do_bench(run, warmup=25, rep=100, return_mode="median")
            except Exception as e:  # a shape that does not fit (shared memory) is reported, not fatal
                print(f"tiles {tiles}: failed {type(e).__name__}", flush=True)
                continue
            print(f"attention {num_q:5d} queries at {ctx} context, {tiles}: {ms:.3f} ms = "
                  f"{flops / ms / 1e9:.0f} TFLOP/s", flush=True)  # fmt: skip


def mixed_attention(device: str, streams: int = 32, stream_context: int = 600) -> None:
    """One layer's attention in a mixed step (`streams` decoding rows beside a prompt chunk, 7B heads, padded
    as a ragged graph pads it), the two query-block maps' launches side by side on two streams against one
    after the other, each replayed from a CUDA graph (the engine replays them so; eager timing is the host's)."""
    import itertools

    import triton.testing

    from services.worker.engines.torch import model_runner
    from services.worker.engines.torch.cuda_graphs import batch_bucket, column_bucket, token_bucket
    from services.worker.engines.torch.kernels import paged_attention as pa

    hq, hkv, d, bs, pool = 32, 8, 128, 16, 40_000
    k_cache = torch.randn(pool * bs, hkv, d, dtype=torch.bfloat16, device=device)
    v_cache = torch.randn_like(k_cache)
    for chunk, context in itertools.product((224, 288), (1024, 4096, 8192)):
        lengths, contexts = [1] * streams + [chunk], [stream_context] * streams + [context]
        rows, cols = batch_bucket(len(lengths) + 1), column_bucket(-(-context // bs))
        num = token_bucket(sum(lengths), model_runner.RAGGED_TOKEN_MULTIPLE)
        small, big, is_padded = model_runner.query_maps(lengths, hq // hkv, torch.bfloat16, pad=True)
        assert is_padded  # (the ragged graph's shapes)
        maps = [torch.tensor(m, dtype=torch.int32, device=device).view(-1, 2) for m in (small, big)]
        starts = [0, *itertools.accumulate(lengths)] + [sum(lengths)] * (rows - len(lengths))
        tables = torch.randperm(pool, device=device)[: rows * cols].view(rows, cols).int()
        args = (torch.randn(num, hq, d, dtype=torch.bfloat16, device=device), k_cache, v_cache, tables,
                torch.tensor(starts, dtype=torch.int32, device=device),
                torch.tensor(contexts + [0] * (rows - len(contexts)), dtype=torch.int32, device=device), bs, num, 132)  # fmt: skip
        times = {}
        for concurrent in (True, False):
            pa.CONCURRENT_MAPS = concurrent
            run = partial(pa.paged_attention, *args, q_blocks=(maps[0], maps[1]))
            times[concurrent] = triton.testing.do_bench_cudagraph(run, rep=100, return_mode="median") * 1e3
        pa.CONCURRENT_MAPS = True
        print(f"mixed-step attention, a {chunk}-token chunk at {context} context beside {streams} streams at "
              f"{stream_context}: side by side {times[True]:.1f} us/layer, one after the other {times[False]:.1f} "
              f"-> ratio {times[False] / times[True]:.2f}", flush=True)  # fmt: skip
