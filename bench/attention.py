"""The paged attention kernel on a chunked-prefill step against SDPA's flash kernel, in TFLOP/s, on the GPU.

    python -m bench.attention                      # MiMo-7B heads: a 512-token chunk at 4K and 8K context
    python -m bench.attention --sweep              # the prefill tile shapes, best first
    python -m bench.attention --decode-rows 32     # with 32 decoding sequences beside the chunk (a mixed step)

The peer is `F.scaled_dot_product_attention(is_causal=True)` (FlashAttention-2 inside PyTorch) over a dense
causal prefill of the same context: it does not page, so it is the rate our kernel's tiles should approach.
FLOPs count only the causally visible (query, key) pairs, 4 * D per pair per head.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from services.worker.engines.torch.kernels.paged_attention import Tiles


def cuda_seconds(fn: Callable[[], object], reps: int) -> float:
    """Seconds per call of `fn` on the GPU: one warm call, then `reps` back to back between two events."""
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / reps


def bench_context(ctx: int, args: argparse.Namespace, tiles: list[Tiles], num_sms: int) -> None:
    """One context length: SDPA's causal prefill rate, then the paged kernel's on the chunk (and decode rows)."""
    from services.worker.engines.torch.kernels import paged_attention as kernels

    hq, hkv, d, bs = 32, 8, 128, args.block_size
    dtype, dev = torch.bfloat16, "cuda"
    q_lens = [args.chunk] + [1] * args.decode_rows
    ctx_lens = [ctx] + [args.decode_context] * args.decode_rows
    width = max(-(-c // bs) for c in ctx_lens)
    num_blocks = sum(-(-c // bs) for c in ctx_lens) + 1
    k_cache = torch.randn(num_blocks * bs, hkv, d, dtype=dtype, device=dev)
    v_cache = torch.randn_like(k_cache)
    order = torch.randperm(num_blocks - 1).tolist()
    tables, used = [], 0
    for c in ctx_lens:
        n = -(-c // bs)
        tables.append(order[used : used + n] + [num_blocks - 1] * (width - n))
        used += n
    block_tables = torch.tensor(tables, device=dev)
    q = torch.randn(sum(q_lens), hq, d, dtype=dtype, device=dev)
    query_start = torch.tensor([0, *itertools.accumulate(q_lens)], dtype=torch.int32, device=dev)
    seq_lens = torch.tensor(ctx_lens, dtype=torch.int32, device=dev)
    pairs = sum(sum(c - n + 1 + t for t in range(n)) for n, c in zip(q_lens, ctx_lens, strict=True))
    flops = 4 * d * hq * pairs
    dense = torch.randn(1, hq, ctx, d, dtype=dtype, device=dev)
    peer = cuda_seconds(lambda: F.scaled_dot_product_attention(dense, dense, dense, is_causal=True), args.reps)
    peer_tflops = 4 * d * hq * ctx * (ctx + 1) / 2 / peer / 1e12
    print(
        f"ctx {ctx}, chunk {args.chunk}, {args.decode_rows} decode rows: SDPA flash causal prefill {peer_tflops:.0f} TFLOP/s"
    )
    small, big = kernels.query_blocks(q_lens, hq // hkv, dtype)
    maps = torch.tensor(small + big, dtype=torch.int32, device=dev).view(-1, 2)
    q_blocks = (maps[: len(small) // 2], maps[len(small) // 2 :]) if len(q_lens) > 1 else None
    results = []
    for t in tiles:
        if t.block_m != kernels.PREFILL_TILES.block_m and q_blocks is not None:
            continue  # the map is built for the default tile's rows per block

        def run(t=t):
            return kernels.paged_attention(
                q, k_cache, v_cache, block_tables, query_start, seq_lens, bs, args.chunk, num_sms,
                tiles=t, q_blocks=q_blocks,
            )  # fmt: skip

        try:
            results.append((cuda_seconds(run, args.reps), t))
        except Exception as e:  # a tile that does not fit in shared memory
            print(f"  {t}: {type(e).__name__}")
    results.sort(key=lambda r: r[0])
    for seconds, t in results[: 8 if args.sweep else 1]:
        tflops = flops / seconds / 1e12
        print(f"  paged {t}: {seconds * 1e6:.0f} us = {tflops:.0f} TFLOP/s, {tflops / peer_tflops:.2f}x SDPA's rate")


def main(argv: Sequence[str]) -> int:
    from services.worker.engines.torch.kernels import paged_attention as kernels

    p = argparse.ArgumentParser(prog="python -m bench.attention", description=__doc__.split("\n")[0])
    p.add_argument("--chunk", type=int, default=512)
    p.add_argument("--contexts", default="4096,8192")
    p.add_argument("--decode-rows", type=int, default=0, help="decoding sequences beside the chunk")
    p.add_argument("--decode-context", type=int, default=640)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--sweep", action="store_true")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    num_sms = torch.cuda.get_device_properties("cuda").multi_processor_count
    tiles = [kernels.PREFILL_TILES]
    if args.sweep:
        tiles = [kernels.Tiles(*t) for t in itertools.product((64, 128), (32, 64, 128), (4, 8), (2, 3, 4))]
    for ctx in (int(c) for c in args.contexts.split(",")):
        bench_context(ctx, args, tiles, num_sms)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
