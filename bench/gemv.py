"""The decode GEMV against cuBLAS on MiMo-7B's linear shapes, each timed inside one CUDA graph.

    python -m bench.gemv                 # the engine's config; TB/s of each and the ratio, per shape
    python -m bench.gemv --sweep         # every config in the sweep, best first, per shape
    python -m bench.gemv --rows 2        # MTP verify at batch 1 (the sweep adds the tensor-core kernel)
    python -m bench.gemv --sweep --dot   # the tensor-core kernel's configs only
    python -m bench.gemv --pair          # FMA configs at 1 and 2 rows: plain decode and MTP verify at batch 1

`--pair` ranks each FMA config by its 1-row plus 2-row time and checks that each row of the 2-row product
is bitwise the 1-row product of that row alone (what keeps greedy MTP on == off token for token).

Each shape gets `--copies` distinct weights (36, one per layer: the o weight alone would fit in the 50 MB L2),
and the graph runs them back to back as a decode step does. Bandwidth counts the weight bytes only.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable, Sequence
from functools import partial
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


def each(linear: Callable[[Tensor, Tensor], Tensor], x: Tensor, weights: list[Tensor]) -> Callable[[], object]:
    """x through each weight in turn, as a decode step runs one layer's linear after another's."""
    return lambda: [linear(x, w) for w in weights]


def bench_shape(name: str, n: int, k: int, args: argparse.Namespace, sweep: list[GemvConfig]) -> None:
    """One weight shape: cuBLAS, then the engine's config (or every config of the sweep, best first)."""
    from services.worker.engines.torch.kernels.gemv import config_for, gemv

    copies = 1 if name == "lm_head" else args.copies
    weights = [torch.randn(n, k, dtype=torch.bfloat16, device="cuda") / k**0.5 for _ in range(copies)]
    x = torch.randn(args.rows, k, dtype=torch.bfloat16, device="cuda")
    gigabytes = copies * n * k * 2 / 1e9

    cublas = time_graph(each(F.linear, x, weights), args.replays)
    ref = F.linear(x, weights[0]).float()
    results: list[tuple[float, GemvConfig, float]] = []
    tuned = config_for(n, k, args.rows)
    for c in sweep if args.sweep else [tuned] if tuned else []:
        try:
            err = (gemv(x, weights[0], config=c).float() - ref).abs().max().item()
            results.append((time_graph(each(partial(gemv, config=c), x, weights), args.replays), c, err))
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


def bench_pair(name: str, n: int, k: int, args: argparse.Namespace, sweep: list[GemvConfig]) -> None:
    """One weight shape: each FMA config at one row and at two, ranked by the sum; bitwise rows."""
    from services.worker.engines.torch.kernels.gemv import config_for, gemv

    copies = 1 if name == "lm_head" else args.copies
    weights = [torch.randn(n, k, dtype=torch.bfloat16, device="cuda") / k**0.5 for _ in range(copies)]
    x = torch.randn(2, k, dtype=torch.bfloat16, device="cuda")
    gigabytes = copies * n * k * 2 / 1e9
    cublas = [time_graph(each(F.linear, a, weights), args.replays) for a in (x[:1], x)]
    results: list[tuple[float, float, GemvConfig, bool]] = []
    for c in sweep:
        try:
            linear = partial(gemv, config=c)
            two = linear(x, weights[0])
            same = all(torch.equal(two[i], linear(x[i : i + 1], weights[0])[0]) for i in range(2))
            t1, t2 = (time_graph(each(linear, a, weights), args.replays) for a in (x[:1], x))
            results.append((t1, t2, c, same))
        except Exception as e:  # a config that does not fit (shared memory, registers)
            print(f"  {name} {c}: {type(e).__name__}", flush=True)
    results.sort(key=lambda r: r[0] + r[1])
    print(
        f"{name} N={n} K={k}: cuBLAS 1 row {cublas[0] * 1e6:.1f} us, 2 rows {cublas[1] * 1e6:.1f} us; "
        f"engine 1-row config {config_for(n, k, 1)}, 2-row {config_for(n, k, 2)}"
    )
    for t1, t2, c, same in results[:8]:
        print(
            f"  gemv {c}: 1 row {t1 * 1e6:.1f} us = {gigabytes / t1 / 1e3:.2f} TB/s ({cublas[0] / t1:.3f}x cuBLAS), "
            f"2 rows {t2 * 1e6:.1f} us ({cublas[1] / t2:.3f}x), rows bitwise {'equal' if same else 'DIFFER'}",
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
    p.add_argument("--pair", action="store_true", help="FMA configs at 1 and 2 rows, ranked by the sum")
    p.add_argument("--shapes", default=",".join(s[0] for s in SHAPES))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    fma = itertools.product((2, 4, 8, 16), (256, 512, 1024), (2, 4, 8), (2, 3, 4))
    dot = itertools.product((16, 32, 64), (128, 256, 512), (2, 4), (3, 4, 6))
    sweep = [GemvConfig(*c) for c in fma if args.rows <= 2 and not args.dot] + [GemvConfig(*c, dot=True) for c in dot]
    wanted = set(args.shapes.split(","))
    if args.pair:
        sweep = [c for c in sweep if not c.dot]
    for name, n, k in SHAPES:
        if name in wanted:
            (bench_pair if args.pair else bench_shape)(name, n, k, args, sweep)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
