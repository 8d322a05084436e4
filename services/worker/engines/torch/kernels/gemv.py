"""Triton GEMV for the few-row linears of decode (batch 1-16, MTP verify): y = x W^T (+ b).

With a few rows a linear is a pure read of its weight. cuBLAS splits K for these shapes and adds a
reduction kernel (and its workspace copy) after each GEMV, and reads the N = 4,096-6,144 weights (o, q|k|v)
at 2.5-3.3 TB/s on the H200 (bench/ENGINE_NOTES.md). Here each program owns `block_n` whole output rows
and streams them once over K, so one kernel does the whole linear and the weight is read exactly once, in
order: for one row with FMAs into fp32 partial sums reduced once at the end, for 2-16 rows with tensor
cores on the rows padded to one 16-row tile.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

MAX_ROWS = 16  # rows (tokens) a GEMV takes: the FMA kernel takes 1-2, the tensor-core one up to 16


@dataclass(frozen=True, slots=True)
class GemvConfig:
    block_n: int = 4
    block_k: int = 1024
    num_warps: int = 4
    num_stages: int = 3
    dot: bool = False  # tensor cores: the rows padded to a 16-row tile, x W^T tile by tile (any rows <= 16)


def config_for(n: int, k: int, rows: int, rowwise: bool = False) -> GemvConfig | None:
    """The kernel for a weight [N, K] at `rows` rows, from the H200's `python -m bench.gemv --sweep`
    (bench/ENGINE_NOTES.md); None past 16 rows, where cuBLAS reads the weight once for all of them.

    One row: FMA, four output rows per program over 1,024-wide K tiles (two warps for N <= 8192).
    2-16 rows: tensor cores, whose cost does not change with the rows; narrow weights (q|k|v, o, down)
    take 16 output rows per program over 512-wide K tiles, gate|up 64 over 128, the LM head 32 over 128.
    `rowwise`: each row's result bitwise the same whatever the other rows, up to 16 (an MTP model: the
    verify step's two rows at batch 1 must give plain decode's one row exactly, or greedy MTP on and off
    part on near-tied logits); then one row runs the tensor-core kernel too. The FMA kernel at two rows
    is rowwise but 0.91-0.95x cuBLAS on q|k|v, gate|up and the LM head (`bench.gemv --pair`)."""
    if rows == 1 and not rowwise:
        return GemvConfig(num_warps=2 if n <= 8192 else 4)
    if rows > MAX_ROWS:
        return None
    if n <= 8192:
        return GemvConfig(block_n=16, block_k=512, num_warps=2, num_stages=3 if k <= 4096 else 4, dot=True)
    if n < 65536:
        return GemvConfig(block_n=64, block_k=128, num_warps=4, num_stages=3, dot=True)
    return GemvConfig(block_n=32, block_k=128, num_warps=2, num_stages=6, dot=True)


@triton.jit
def _gemv_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    N,
    K,
    stride_x,
    stride_w,
    stride_y,
    ROWS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    EVEN: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    w_ptrs = w_ptr + rn[:, None].to(tl.int64) * stride_w + rk[None, :]
    acc0 = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
    acc1 = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
    for k in range(0, K, BLOCK_K):
        if EVEN:
            w = tl.load(w_ptrs, eviction_policy="evict_first").to(tl.float32)
            x0 = tl.load(x_ptr + k + rk).to(tl.float32)
        else:
            in_k = k + rk < K
            w = tl.load(w_ptrs, mask=(rn[:, None] < N) & in_k[None, :], other=0.0, eviction_policy="evict_first")
            w = w.to(tl.float32)
            x0 = tl.load(x_ptr + k + rk, mask=in_k, other=0.0).to(tl.float32)
        acc0 += w * x0[None, :]
        if ROWS == 2:
            if EVEN:
                x1 = tl.load(x_ptr + stride_x + k + rk).to(tl.float32)
            else:
                x1 = tl.load(x_ptr + stride_x + k + rk, mask=in_k, other=0.0).to(tl.float32)
            acc1 += w * x1[None, :]
        w_ptrs += BLOCK_K
    y0 = tl.sum(acc0, axis=1)
    if HAS_BIAS:
        bias = tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
        y0 += bias
    tl.store(y_ptr + rn, y0.to(y_ptr.dtype.element_ty), mask=rn < N)
    if ROWS == 2:
        y1 = tl.sum(acc1, axis=1)
        if HAS_BIAS:
            y1 += bias
        tl.store(y_ptr + stride_y + rn, y1.to(y_ptr.dtype.element_ty), mask=rn < N)


@triton.jit
def _dot_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    M,
    N,
    K,
    stride_x,
    stride_w,
    stride_y,
    HAS_BIAS: tl.constexpr,
    EVEN: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rm = tl.arange(0, 16)
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + rm[:, None] * stride_x + rk[None, :]
    w_ptrs = w_ptr + rn[:, None].to(tl.int64) * stride_w + rk[None, :]
    acc = tl.zeros((16, BLOCK_N), tl.float32)
    for k in range(0, K, BLOCK_K):
        in_k = k + rk < K
        x = tl.load(x_ptrs, mask=(rm[:, None] < M) & in_k[None, :], other=0.0)
        if EVEN:
            w = tl.load(w_ptrs, eviction_policy="evict_first")
        else:
            w = tl.load(w_ptrs, mask=(rn[:, None] < N) & in_k[None, :], other=0.0, eviction_policy="evict_first")
        acc = tl.dot(x, tl.trans(w), acc)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    if HAS_BIAS:
        acc += tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    y_ptrs = y_ptr + rm[:, None] * stride_y + rn[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))


def gemv(x: Tensor, weight: Tensor, bias: Tensor | None = None, config: GemvConfig | None = None) -> Tensor:
    """x [M, K] @ weight[N, K]^T (+ bias [N]) -> [M, N] in x's dtype, fp32 accumulation; M <= 2 for the
    FMA kernel, <= 16 for the tensor-core one (`config.dot`)."""
    rows, k = x.shape
    n = weight.shape[0]
    c = config or config_for(n, k, rows)
    if (
        c is None
        or rows > (MAX_ROWS if c.dot else 2)
        or weight.shape[1] != k
        or weight.stride(1) != 1
        or x.stride(1) != 1
    ):
        raise ValueError(
            f"gemv takes x [<= {MAX_ROWS}, K] and a row-major weight [N, K]; got {x.shape}, {weight.shape}"
        )
    y = torch.empty(rows, n, dtype=x.dtype, device=x.device)
    if rows == 0:
        return y
    even = n % c.block_n == 0 and k % c.block_k == 0
    b = bias if bias is not None else weight
    grid = (triton.cdiv(n, c.block_n),)
    if c.dot:
        _dot_kernel[grid](
            x, weight, b, y, rows, n, k, x.stride(0), weight.stride(0), y.stride(0),
            HAS_BIAS=bias is not None, EVEN=even, BLOCK_N=c.block_n, BLOCK_K=c.block_k,
            num_warps=c.num_warps, num_stages=c.num_stages,
        )  # fmt: skip
        return y
    _gemv_kernel[grid](
        x, weight, b, y, n, k, x.stride(0), weight.stride(0), y.stride(0),
        ROWS=rows, HAS_BIAS=bias is not None, EVEN=even, BLOCK_N=c.block_n, BLOCK_K=c.block_k,
        num_warps=c.num_warps, num_stages=c.num_stages,
    )  # fmt: skip
    return y


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, rowwise: bool = False) -> Tensor:
    """F.linear, with the GEMV kernels for the decode shapes they are faster at (`config_for`)."""
    if x.dim() == 2 and x.is_cuda and x.stride(-1) == 1 and weight.stride(-1) == 1:
        config = config_for(weight.shape[0], weight.shape[1], x.shape[0], rowwise)
        if config is not None:
            return gemv(x, weight, bias, config)
    return torch.nn.functional.linear(x, weight, bias)
