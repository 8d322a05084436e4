"""`mimo-serve bench engine`: the reference engine's tokens/s against HF `generate` on the same weights.

Batch 1 and batch 32, MTP off and on (when the model has an MTP layer), greedy, fixed lengths;
on CUDA also the HBM roofline (weights bytes / measured copy bandwidth). The last line is the headline.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch

from services.worker.engine_api import GenerateInput, OutputChunk, SamplingConfig
from services.worker.engines.torch.core import CoreConfig, EngineCore
from services.worker.model import MiMoConfig, MiMoForCausalLM, load_mimo

Prompts = Callable[[int], list[list[int]]]  # round -> token ids of the batch

# MiMo-7B-RL's shape (reference/mimo.md §1), random weights.
MIMO_7B = MiMoConfig(
    vocab_size=151680, hidden_size=4096, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=32,
    num_key_value_heads=8, head_dim=128, max_position_embeddings=32768, rope_theta=640000.0, rms_norm_eps=1e-5,
    attention_bias=True, num_nextn_predict_layers=0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    batch: int
    tokens_per_s: float  # generated tokens / wall time, prefill included
    decode_steps_per_s: float  # engine steps per second after the first token (0: not measured)
    accept_rate: float | None = None


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mimo-serve bench engine", description=__doc__)
    p.add_argument("--model", default="models/tiny-mimo", help="HF model directory (ignored with --random)")
    p.add_argument("--random", choices=["7b"], help="random weights of this shape instead of --model")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="auto", help="auto: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per configuration (median)")
    p.add_argument("--modes", default="off,on", help="MTP modes: off, on (per-step policy), always (draft every step)")
    p.add_argument("--eager", action="store_true", help="also time our engine without CUDA graphs")
    p.add_argument("--ab", action="store_true", help="also time our engine with graphs but no compiled kernels")
    p.add_argument("--attn-ab", action="store_true", help="also time the exact (gather + SDPA) attention path")
    p.add_argument("--lazy-ab", action="store_true", help="also time graphs captured on first sight, not at start")
    p.add_argument("--mtp-layer", action="store_true", help="--random 7b: add MiMo's MTP layer (random weights)")
    p.add_argument("--max-batch-tokens", type=int, default=8192, help="per-step token budget (chunked prefill)")
    p.add_argument("--ttft-prompt", type=int, default=0, help="CUDA: TTFT of a prompt this long beside streams")
    p.add_argument("--ttft-streams", type=int, default=32)
    p.add_argument("--ttft-budgets", default="512", help="per-step token budgets for the TTFT section")
    p.add_argument(
        "--ttft-ab",
        default="",
        help="TTFT: each budget also with 'eager' mixed steps and/or "
        "'serial' mixed-step attention (its two launches on one stream), e.g. eager,serial",
    )
    p.add_argument("--mixed-attention", action="store_true", help="CUDA: a mixed step's attention, two streams vs one")
    p.add_argument("--contexts", default="", help="CUDA: batch-1 long contexts, e.g. 4096,16384,32000")
    p.add_argument("--check-logits", type=int, default=0, help="CUDA: logits vs HF over a prompt this long")
    p.add_argument("--attention-tiles", action="store_true", help="CUDA: time the prefill kernel's tile shapes")
    p.add_argument("--no-hf", action="store_true", help="skip HF generate")
    p.add_argument("--check", action="store_true", help="first compare greedy tokens: graphs, eager, HF")
    p.add_argument("--json", help="write all results to this file")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (ours and HF alike); 0: default")
    args = p.parse_args(argv)
    args.ttft_ab = [v for v in args.ttft_ab.split(",") if v]
    if unknown := set(args.ttft_ab) - {"eager", "serial"}:
        p.error(f"--ttft-ab: {', '.join(sorted(unknown))} (choose from eager, serial)")
    return args


def collect(chunks: list[tuple[str, OutputChunk]], into: dict[str, list[int]]) -> None:
    for rid, chunk in chunks:
        into.setdefault(rid, []).extend(chunk.token_ids)


def is_decoding(core: EngineCore) -> bool:
    """Every sequence admitted and past its prompt: the next step is a pure decode step."""
    running = core.scheduler.running
    return not core.scheduler.waiting and all(s.num_computed_tokens >= s.num_tokens - 1 for s in running)


def build_model(args: argparse.Namespace, dtype: torch.dtype) -> MiMoForCausalLM:
    if args.random is None:
        return load_mimo(args.model, args.device, dtype)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the target dtype: no fp32 copy of 7B weights
    try:
        cfg = dataclasses.replace(MIMO_7B, num_nextn_predict_layers=int(args.mtp_layer))
        with torch.device("meta"):
            model = MiMoForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    model = model.to_empty(device=args.device)
    gen = torch.Generator(args.device).manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=gen)
    return model.eval()


def as_hf(model: MiMoForCausalLM):
    """transformers' Qwen2ForCausalLM over the same backbone weights (shared tensors, no copy)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    c = model.config
    hf_cfg = Qwen2Config(  # type: ignore[call-arg]
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, head_dim=c.head_dim, max_position_embeddings=c.max_position_embeddings,
        rope_theta=c.rope_theta, rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=c.tie_word_embeddings,
    )  # fmt: skip
    with torch.device("meta"):  # no allocation: the weights are assigned from ours
        hf = Qwen2ForCausalLM(hf_cfg)
    backbone = {k: v for k, v in model.state_dict().items() if ".mtp_layers." not in k}
    hf.load_state_dict(backbone, strict=True, assign=True)
    hf.model.rotary_emb = type(hf.model.rotary_emb)(hf_cfg).to(model.lm_head.weight.device)  # its buffers
    return hf.eval()


def random_prompts(batch: int, length: int, vocab: int, rnd: int) -> list[list[int]]:
    """Fresh random prompts per round, so no round hits the prefix cache of another."""
    gen = torch.Generator().manual_seed(1000 * batch + rnd)
    return torch.randint(3, vocab, (batch, length), generator=gen).tolist()


def chat_prompts(model_dir: str, batch: int, rnd: int) -> list[list[int]]:
    """In-domain prompts for the tiny MiMo: two-digit sums and differences in ChatML (equal lengths)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    gen = torch.Generator().manual_seed(1000 * batch + rnd)
    a, b = torch.randint(10, 100, (2, batch), generator=gen).tolist()
    texts = [
        f"<|im_start|>system\n<|im_end|>\n<|im_start|>user\nWhat is {x} {'+-'[i % 2]} {y}?<|im_end|>\n"
        "<|im_start|>assistant\n"
        for i, (x, y) in enumerate(zip(a, b, strict=True))
    ]
    return [tokenizer.encode(t, add_special_tokens=False).ids for t in texts]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass(frozen=True, slots=True)
class Timing:
    total_s: float
    decode_s: float = 0.0  # after the first step (0: not separated)
    decode_steps: int = 0
    accept_rate: float | None = None


class OurRounds:
    """One EngineCore per configuration (its warm-up round captures the CUDA graphs); each call times a round."""

    def __init__(
        self,
        model: MiMoForCausalLM,
        prompts_of: Prompts,
        new_tokens: int,
        is_mtp: bool,
        graphs: bool,
        compiled: bool,
        exact_attention: bool = False,
        max_batch_tokens: int = 8192,
        mode: str = "auto",
        capture_at_start: bool = True,
    ) -> None:
        self.model, self.prompts_of, self.new_tokens = model, prompts_of, new_tokens
        self.is_mtp, self.graphs, self.compiled = is_mtp, graphs, compiled
        self.exact_attention, self.max_batch_tokens = exact_attention, max_batch_tokens
        self.capture_at_start = capture_at_start
        self.policy_mode = "always" if mode == "always" else "auto"
        self.core: EngineCore | None = None
        self.outputs: dict[str, list[int]] = {}  # the last round's tokens per request
        self.prefill_steps: list[float] = []  # the last round's prefill step times (s)

    def __call__(self, rnd: int) -> Timing:
        prompts = self.prompts_of(rnd)
        if self.core is None:
            blocks = sum(-(-(len(p) + self.new_tokens + 2) // 16) for p in prompts) + 8  # no preemption
            cfg = CoreConfig(num_blocks=blocks, max_running_requests=max(64, len(prompts)), is_mtp_enabled=self.is_mtp,
                             use_cuda_graphs=self.graphs, compile_kernels=self.compiled, max_context_length=self.model.config.max_position_embeddings,
                             max_batch_tokens=self.max_batch_tokens, capture_at_start=self.capture_at_start)  # fmt: skip
            self.core = EngineCore(self.model, cfg)
            if self.exact_attention:
                self.core.runner.use_kernels = False
            self.core.runner.spec_policy.mode = self.policy_mode
        core = self.core
        sampling = SamplingConfig(temperature=0.0, max_new_tokens=self.new_tokens, ignore_eos=True)
        for i, p in enumerate(prompts):
            core.add_request(GenerateInput(f"r{rnd}-{i}", tuple(p), sampling))
        drafted, accepted = core.num_draft_tokens, core.num_accepted_tokens
        got: dict[str, list[int]] = {}
        start, self.prefill_steps = time.perf_counter(), []
        while core.has_work and not is_decoding(core):
            begin = time.perf_counter()
            collect(core.step(), got)  # prefill (chunked: several steps)
            self.prefill_steps.append(time.perf_counter() - begin)
        first, steps = time.perf_counter(), 0
        while core.has_work:
            collect(core.step(), got)
            steps += 1
        end = time.perf_counter()
        self.outputs = got
        drafted, accepted = core.num_draft_tokens - drafted, core.num_accepted_tokens - accepted
        return Timing(end - start, end - first, steps, accepted / drafted if drafted else None)

    def replay_ms(self) -> dict[str, float]:
        """GPU time of each captured graph alone (median of 50 replays): the step's device-bound part."""
        graphs = self.core.runner.graphs if self.core is not None else None
        out = {}
        for key, entry in (graphs.graphs if graphs is not None else {}).items():
            times = []
            for _ in range(50):
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
                entry.graph.replay()
                end.record()
                end.synchronize()
                times.append(begin.elapsed_time(end))
            out["/".join(str(part) for part in key)] = statistics.median(times)  # type: ignore[attr-defined]
        return out


def time_hf(hf, prompts_of: Prompts, new_tokens: int, rnd: int) -> Timing:
    """One greedy HF `generate` of the same batch (decode not separated from prefill)."""
    ids = torch.tensor(prompts_of(rnd), device=hf.device)
    sync(str(hf.device))
    start = time.perf_counter()
    with torch.inference_mode():
        hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                    do_sample=False, pad_token_id=0, eos_token_id=None)  # fmt: skip
    sync(str(hf.device))
    return Timing(time.perf_counter() - start)


def copy_bandwidth(device: str, num_bytes: int = 4 << 30) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting read + write (BENCHMARKS.md's definition)."""
    src = torch.empty(num_bytes // 2, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    times = []
    for _ in range(10):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end) / 1e3)
    return 2 * num_bytes / statistics.median(times[2:])


def run_configs(
    configs: list[tuple[str, Callable[[int], Timing], int]], batch: int, new_tokens: int
) -> dict[str, Result | Exception]:
    """(label, rounds function, rounds) each: a warm-up round each, then the rounds interleaved (round r of
    every configuration before round r + 1 of any), so drift in the GPU's clocks or the host's load falls
    on all of them alike; each result is the median of its rounds of fresh prompts. A configuration that
    fails is reported as its exception, and the others go on."""
    runs: dict[str, list[Timing] | Exception] = {}
    for label, fn, _ in configs:
        try:
            fn(0)
            runs[label] = []
        except Exception as e:  # one broken configuration must not lose the others
            runs[label] = e
    for r in range(max(n for _, _, n in configs)):
        for label, fn, rounds in configs:
            done = runs[label]
            if isinstance(done, list) and r < rounds:
                try:
                    done.append(fn(r + 1))
                except Exception as e:
                    runs[label] = e
    return {label: done if isinstance(done, Exception) else summarise(label, done, batch, new_tokens)
            for label, done in runs.items()}  # fmt: skip


def summarise(name: str, runs: list[Timing], batch: int, new_tokens: int) -> Result:
    total = statistics.median(r.total_s for r in runs)
    decode = statistics.median(r.decode_s for r in runs)
    steps = statistics.median(r.decode_steps for r in runs)
    rates = [r.accept_rate for r in runs if r.accept_rate is not None]
    return Result(
        name,
        batch,
        batch * new_tokens / total,
        steps / decode if decode else 0.0,
        statistics.mean(rates) if rates else None,
    )


def bench_batch(model: MiMoForCausalLM, hf, args: argparse.Namespace, batch: int, modes: list[str]) -> list[Result]:
    """Every configuration at one batch size; a failing one is reported and skipped."""
    is_cuda = args.device.startswith("cuda")
    if args.random is None and (Path(args.model) / "tokenizer.json").is_file():
        prompts: Prompts = partial(chat_prompts, args.model, batch)
    else:
        prompts = partial(random_prompts, batch, args.prompt_tokens, model.config.vocab_size)
    configs: list[tuple[str, Callable[[int], Timing]]] = []
    for mode in modes:
        variants = [("", is_cuda, is_cuda)]  # (label, CUDA graphs, compiled kernels)
        variants += [(" no-compile", True, False)] if is_cuda and args.ab else []
        variants += [(" eager", False, False)] if is_cuda and args.eager else []
        variants += [(" exact-attn", is_cuda, is_cuda)] if args.attn_ab else []
        variants += [(" lazy-graphs", True, True)] if is_cuda and args.lazy_ab else []
        for suffix, graphs, compiled in variants:
            rounds = OurRounds(model, prompts, args.new_tokens, mode != "off", graphs, compiled,
                               suffix == " exact-attn", args.max_batch_tokens, mode, suffix != " lazy-graphs")  # fmt: skip
            configs.append((f"ours MTP {mode}{suffix}", rounds))
    if hf is not None:
        configs.append(("HF generate", partial(time_hf, hf, prompts, args.new_tokens)))
    results, outputs = [], {}
    rounds = [args.rounds if label.startswith("ours") else max(1, min(args.rounds, 2)) for label, _ in configs]
    measured = run_configs(
        [(label, fn, n) for (label, fn), n in zip(configs, rounds, strict=True)], batch, args.new_tokens
    )
    for label, fn in configs:
        result = measured[label]
        if isinstance(result, Exception):
            print(f"batch {batch:3d}  {label}: FAILED {result!r}", flush=True)
            continue
        results.append(result)
        print_result(results[-1])
        if isinstance(fn, OurRounds):
            outputs[label] = fn.outputs
            steps = fn.prefill_steps
            if steps:
                print(
                    f"    prefill: {len(steps)} steps, {sum(steps):.2f} s, slowest {max(steps) * 1e3:.1f} ms",
                    flush=True,
                )
            if fn.core is not None and fn.core.is_mtp:
                print(f"    mtp policy: {fn.core.runner.spec_policy.summary()}", flush=True)
        if isinstance(fn, OurRounds) and fn.graphs:
            print("    graph replay ms: " + ", ".join(f"{k} {v:.2f}" for k, v in fn.replay_ms().items()), flush=True)
    plain = outputs.get("ours MTP off")
    for label, got in outputs.items():
        if plain and label.startswith(("ours MTP on", "ours MTP always")):
            same = sum(got.get(rid) == toks for rid, toks in plain.items())
            print(f"batch {batch:3d}  greedy {label} == MTP off for {same} of {len(plain)} sequences", flush=True)
    return results


def check_greedy(model: MiMoForCausalLM, hf, args: argparse.Namespace) -> None:
    """Greedy tokens of ours with graphs, ours eager and HF generate on 4 prompts (bf16 may drift late)."""
    prompts = random_prompts(4, args.prompt_tokens, model.config.vocab_size, 99)
    runs = {}
    for name, graphs in (("graphs", True), ("eager", False)):
        core = EngineCore(model, CoreConfig(num_blocks=64, is_mtp_enabled=False, use_cuda_graphs=graphs))
        for i, p in enumerate(prompts):
            core.add_request(
                GenerateInput(f"c{i}", tuple(p), SamplingConfig(temperature=0.0, max_new_tokens=16, ignore_eos=True))
            )
        out: dict[str, list[int]] = {}
        while core.has_work:
            for rid, chunk in core.step():
                out.setdefault(rid, []).extend(chunk.token_ids)
        runs[name] = [out[f"c{i}"] for i in range(len(prompts))]
    if hf is not None:
        ids = torch.tensor(prompts, device=args.device)
        with torch.inference_mode():
            gen = hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=16,
                do_sample=False,
                pad_token_id=0,
                eos_token_id=None,
            )
        runs["hf"] = gen[:, ids.shape[1] :].tolist()
    for name, outs in runs.items():
        same = [
            next((k for k, (a, b) in enumerate(zip(o, g, strict=True)) if a != b), 16)
            for o, g in zip(outs, runs["graphs"], strict=True)
        ]
        print(f"check: {name:6s} agrees with ours (graphs) for the first {same} of 16 greedy tokens", flush=True)


def roofline(model: MiMoForCausalLM, results: list[Result], args: argparse.Namespace) -> dict[str, float]:
    """Weight-read roofline (batch 1), and weights + KV reads at each batch's mean decode context."""
    bandwidth = copy_bandwidth(args.device)
    cfg = model.config
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kv_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * model.lm_head.weight.element_size()
    steps = bandwidth / weight_bytes
    print(f"roofline: {weight_bytes / 1e9:.2f} GB of weights at {bandwidth / 1e12:.2f} TB/s -> {steps:.0f} steps/s")
    context = args.prompt_tokens + args.new_tokens / 2
    for r in results:
        if not r.decode_steps_per_s:
            continue
        kv_bytes = r.batch * context * kv_token
        bound = bandwidth / (weight_bytes + kv_bytes)
        print(
            f"  {r.name:24s} batch {r.batch:3d} decode {r.decode_steps_per_s:7.1f} steps/s = "
            f"{r.decode_steps_per_s / steps:.0%} of weight roofline, {r.decode_steps_per_s / bound:.0%} of "
            f"weight+KV roofline ({bound:.0f} steps/s: + {kv_bytes / 1e9:.2f} GB KV at mean context {context:.0f})"
        )
    return {"bandwidth_tb_s": bandwidth / 1e12, "weight_gb": weight_bytes / 1e9, "roofline_steps_s": steps}


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.random is None and not (Path(args.model) / "config.json").is_file():
        print(f"bench engine: no model at {args.model} (train it, or pass --random 7b)", file=sys.stderr)
        return 2
    on_cuda = args.device.startswith("cuda")
    dtype = getattr(torch, args.dtype) if args.dtype != "auto" else (torch.bfloat16 if on_cuda else torch.float32)
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name() if on_cuda else 'cpu'}, {dtype}", flush=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args, dtype)
    hf = None if args.no_hf else as_hf(model)
    if args.check:
        check_greedy(model, hf, args)
    has_mtp = model.config.num_nextn_predict_layers > 0
    modes = [m for m in args.modes.split(",") if m == "off" or (m in ("on", "always") and has_mtp)]
    results = [r for b in args.batches.split(",") for r in bench_batch(model, hf, args, int(b), modes)]
    summary: dict[str, object] = {"results": [asdict(r) for r in results], "device": args.device, "dtype": str(dtype)}
    if on_cuda:
        summary.update(roofline(model, results, args))
        mtp_step_cost(results)
        serving_sections(model, hf, args, summary["bandwidth_tb_s"] * 1e12)  # type: ignore[operator]
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    print(headline(results))
    return 0


def mtp_step_cost(results: list[Result]) -> None:
    """One MTP step (draft + 2-token verify, drafting every step) against one plain decode step."""
    for r in results:
        if r.name == "ours MTP always":
            off = next((o for o in results if o.batch == r.batch and o.name == "ours MTP off"), None)
            if off is not None and r.decode_steps_per_s:
                ratio = off.decode_steps_per_s / r.decode_steps_per_s
                print(f"mtp step cost batch {r.batch}: {ratio:.3f}x a plain decode step; at acceptance 0.9 "
                      f"MTP would give {1.9 / ratio:.2f}x the tokens/s", flush=True)  # fmt: skip
    for r in results:
        if r.name.startswith("ours MTP on"):  # against the MTP-off engine of the same variant
            suffix = r.name.removeprefix("ours MTP on")
            off = next((o for o in results if o.batch == r.batch and o.name == f"ours MTP off{suffix}"), None)
            if off is not None:
                print(f"mtp on/off{suffix} batch {r.batch}: {r.tokens_per_s / off.tokens_per_s:.3f}", flush=True)


def serving_sections(model: MiMoForCausalLM, hf, args: argparse.Namespace, bandwidth: float) -> None:
    from bench import engine_serving

    if args.attention_tiles:
        engine_serving.attention_tiles(args.device)
    if args.mixed_attention:
        engine_serving.mixed_attention(args.device)
    if args.check_logits:
        engine_serving.logits_vs_hf(model, hf if hf is not None else as_hf(model), args.check_logits)
    if args.ttft_prompt:
        tflops = engine_serving.matmul_tflops(args.device)
        for budget in (int(b) for b in args.ttft_budgets.split(",")):
            for variant in ["", *args.ttft_ab]:
                engine_serving.ttft_beside_streams(
                    model, args.ttft_prompt, args.ttft_streams, budget, tflops, variant=variant
                )
    if args.contexts:
        engine_serving.long_contexts(model, [int(c) for c in args.contexts.split(",")], bandwidth)


def print_result(r: Result) -> None:
    accept = f"  accept rate {r.accept_rate:.3f}" if r.accept_rate is not None and "MTP off" not in r.name else ""
    steps = f"  decode {r.decode_steps_per_s:7.1f} steps/s" if r.decode_steps_per_s else ""
    print(f"batch {r.batch:3d}  {r.name:18s} {r.tokens_per_s:10.1f} tok/s{steps}{accept}", flush=True)


def headline(results: list[Result]) -> str:
    ours = [r for r in results if r.batch == 1 and r.name.startswith("ours")]
    peer = next((r for r in results if r.batch == 1 and r.name == "HF generate"), None)
    if not ours or peer is None:
        return "engine batch 1: no HF generate baseline measured"
    best = max(ours, key=lambda r: r.tokens_per_s)
    ratio = best.tokens_per_s / peer.tokens_per_s
    return f"engine batch 1: {best.name} {best.tokens_per_s:.1f} tok/s vs HF generate {peer.tokens_per_s:.1f} tok/s -> ratio {ratio:.2f}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
