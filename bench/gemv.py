"""The decode GEMV against cuBLAS on MiMo-7B's linear shapes, each timed inside one CUDA graph.

    python -m bench.gemv                 # the engine's config; TB/s of each and the ratio, per shape
    python -m bench.gemv --sweep         # every config in the sweep, best first, per shape
    python -m bench.gemv --rows 2        # MTP verify at batch 1 (the sweep adds the tensor-core kernel)
    python -m bench.gemv --sweep --dot   # the tensor-core kernel's configs only

Each shape gets `--copies` distinct weights (36, one per layer: the o weight alone would fit in the 50 MB L2),
and the graph runs them back to back as a decode step does. Bandwidth counts the weight bytes only.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.attention import cuda_seconds

if TYPE_CHECKING:
    from services.worker.engines.torch.kernels.gemv import GemvConfig

# (name, N, K) of MiMo-7B: q|k|v, o, gate|up, down, the LM head
SHAPES = (
    ("qkv", 6144, 4096),
    ("o", 4096, 4096),
    ("gate_up", 22016, 4096),
    ("down", 4096, 11008),
    ("lm_head", 151680, 4096),
)


def time_graph(fn: Callable[[], object], replays: int) -> float:
    """Seconds per call of `fn`, captured once in a CUDA graph and replayed."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return cuda_seconds(graph.replay, replays)


def bench_shape(name: str, n: int, k: int, args: argparse.Namespace, sweep: list[GemvConfig]) -> None:
    """One weight shape: cuBLAS, then the engine's config (or every config of the sweep, best first)."""
    from services.worker.engines.torch.kernels.gemv import config_for, gemv

    copies = 1 if name == "lm_head" else args.copies
    weights = [torch.randn(n, k, dtype=torch.bfloat16, device="cuda") / k**0.5 for _ in range(copies)]
    x = torch.randn(args.rows, k, dtype=torch.bfloat16, device="cuda")
    gigabytes = copies * n * k * 2 / 1e9

    def run(linear: Callable[[Tensor, Tensor], Tensor]) -> Callable[[], object]:
        return lambda: [linear(x, w) for w in weights]

    def with_config(c: GemvConfig) -> Callable[[Tensor, Tensor], Tensor]:
        return lambda a, w: gemv(a, w, config=c)

    cublas = time_graph(run(F.linear), args.replays)
    ref = F.linear(x, weights[0]).float()
    results: list[tuple[float, GemvConfig, float]] = []
    tuned = config_for(n, k, args.rows)
    for c in sweep if args.sweep else [tuned] if tuned else []:
        try:
            err = (gemv(x, weights[0], config=c).float() - ref).abs().max().item()
            results.append((time_graph(run(with_config(c)), args.replays), c, err))
        except Exception as e:  # a config that does not fit (shared memory, registers)
            print(f"  {name} {c}: {type(e).__name__}", flush=True)
    results.sort(key=lambda r: r[0])
    print(f"{name} N={n} K={k} rows={args.rows}: cuBLAS {cublas * 1e6:.1f} us = {gigabytes / cublas / 1e3:.2f} TB/s")
    for seconds, c, err in results[: 8 if args.sweep else 1]:
        print(
            f"  gemv {c}: {seconds * 1e6:.1f} us = {gigabytes / seconds / 1e3:.2f} TB/s, "
            f"{cublas / seconds:.3f}x cuBLAS, max |err| {err:.2e}",
            flush=True,
        )
    torch.cuda.empty_cache()


def main(argv: Sequence[str]) -> int:
    from services.worker.engines.torch.kernels.gemv import GemvConfig

    p = argparse.ArgumentParser(prog="python -m bench.gemv", description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1)
    p.add_argument("--copies", type=int, default=36)
    p.add_argument("--replays", type=int, default=20)
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--dot", action="store_true", help="sweep only the tensor-core kernel")
    p.add_argument("--shapes", default=",".join(s[0] for s in SHAPES))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    fma = itertools.product((2, 4, 8, 16), (256, 512, 1024), (2, 4, 8), (2, 3, 4))
    dot = itertools.product((16, 32, 64), (128, 256, 512), (2, 4), (3, 4, 6))
    sweep = [GemvConfig(*c) for c in fma if args.rows <= 2 and not args.dot] + [GemvConfig(*c, dot=True) for c in dot]
    wanted = set(args.shapes.split(","))
    for name, n, k in SHAPES:
        if name in wanted:
            bench_shape(name, n, k, args, sweep)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
