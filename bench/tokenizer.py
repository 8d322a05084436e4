"""`mimo-serve bench tokenizer`: batch-encode tokens/s over gRPC against in-process `tokenizers` (the limit).

Both sides encode the same fresh texts (unique per round, so the service's prompt cache never answers), in
alternating rounds; medians are reported and the last line is the headline ratio (target >= 0.5).
The server runs in its own process with its production defaults; the client and the in-process baseline run here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from mimo_client.v1 import tokenizer_pb2, tokenizer_pb2_grpc
from tokenizers import Tokenizer

from services.text.artifacts import ArtifactsError, load_tokenizer_dir
from services.tokenizer.__main__ import DEFAULT_MODEL, resolve_model_dir

PARAGRAPHS = (
    "Let n be a positive integer such that n^2 + 3n + 2 is divisible by 6. Show that n is not a multiple of 3 "
    "unless n + 1 is even, and compute the sum of all such n below 1000. ",
    "def merge_sorted(a: list[int], b: list[int]) -> list[int]:\n    out, i, j = [], 0, 0\n    while i < len(a) "
    "and j < len(b):\n        if a[i] <= b[j]:\n            out.append(a[i]); i += 1\n        else:\n"
    "            out.append(b[j]); j += 1\n    return out + a[i:] + b[j:]\n",
    "已知函数 f(x) = x² − 4x + 3，求 f(x) 在区间 [0, 5] 上的最大值与最小值，并说明理由。 ",
    "<think>\nFirst, factor the quadratic: (x - 1)(x - 3). The roots are 1 and 3, so the vertex is at x = 2.\n"
    "</think>\nThe minimum is -1 at x = 2 and the maximum is 8 at x = 5. 🎉 ",
)


def make_batches(round_no: int, num_batches: int, batch_size: int, text_chars: int) -> list[list[str]]:
    """Distinct texts of about `text_chars` characters mixing math, code, Chinese and emoji."""
    batches = []
    for b in range(num_batches):
        batch = []
        for i in range(batch_size):
            head = f"[{round_no}.{b}.{i}] "
            body = "".join(PARAGRAPHS[(i + k) % len(PARAGRAPHS)] for k in range(text_chars // 120 + 1))
            batch.append((head + body)[:text_chars])
        batches.append(batch)
    return batches


def encode_in_process(tokenizer: Tokenizer, batches: list[list[str]]) -> tuple[int, float]:
    """(tokens, seconds) for encode_batch_fast over every batch, ids taken out as Python lists."""
    start, num_tokens = time.perf_counter(), 0
    for batch in batches:
        ids = [e.ids for e in tokenizer.encode_batch_fast(batch, add_special_tokens=False)]
        num_tokens += sum(map(len, ids))
    return num_tokens, time.perf_counter() - start


async def encode_over_grpc(
    stub: tokenizer_pb2_grpc.TokenizerStub, batches: list[list[str]], concurrency: int
) -> tuple[int, float]:
    """(tokens, seconds) for Tokenize over every batch with `concurrency` calls in flight."""
    gate = asyncio.Semaphore(concurrency)

    async def one(batch: list[str]) -> int:
        async with gate:
            response = await stub.Tokenize(tokenizer_pb2.TokenizeRequest(texts=batch), timeout=60)
            return sum(len(e.ids) for e in response.encodings)

    start = time.perf_counter()
    counts = await asyncio.gather(*(one(b) for b in batches))
    return sum(counts), time.perf_counter() - start


def start_server(model_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "services.tokenizer", "--model", str(model_dir)]
    cmd += ["--listen", f"127.0.0.1:{port}", "--metrics-port", "-1", "--log-level", "WARNING"]
    return subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1]), f"127.0.0.1:{port}"


def fmt_rate(tokens_per_s: float) -> str:
    return f"{tokens_per_s / 1e6:.2f}M" if tokens_per_s >= 1e6 else f"{tokens_per_s / 1e3:.0f}k"


async def run_rounds(args: argparse.Namespace, tokenizer: Tokenizer, target: str) -> tuple[list[float], list[float]]:
    ours, limit = [], []
    max_message = 256 * 1024 * 1024
    options = [("grpc.max_receive_message_length", max_message), ("grpc.max_send_message_length", max_message)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=30)
        stub = tokenizer_pb2_grpc.TokenizerStub(channel)
        print(f"{'round':>5} {'in-process tok/s':>17} {'service tok/s':>14} {'ratio':>6}")
        for r in range(args.rounds + 1):  # round 0 warms both up and is not counted
            batches = make_batches(r, args.batches, args.batch_size, args.text_chars)
            first_service = r % 2 == 1
            if first_service:
                service_tokens, service_s = await encode_over_grpc(stub, batches, args.concurrency)
            local_tokens, local_s = encode_in_process(tokenizer, batches)
            if not first_service:
                service_tokens, service_s = await encode_over_grpc(stub, batches, args.concurrency)
            if service_tokens != local_tokens:
                raise RuntimeError(f"service returned {service_tokens} tokens, in-process {local_tokens}")
            if r == 0:
                continue
            limit.append(local_tokens / local_s)
            ours.append(service_tokens / service_s)
            print(f"{r:>5} {fmt_rate(limit[-1]):>17} {fmt_rate(ours[-1]):>14} {ours[-1] / limit[-1]:>6.2f}")
    return ours, limit


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="mimo-serve bench tokenizer", description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="tokenizer directory (default: the tiny MiMo)")
    parser.add_argument("--target", help="bench a running service at HOST:PORT instead of starting one")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=24, help="Tokenize calls per round")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per call")
    parser.add_argument("--text-chars", type=int, default=1000, help="characters per text")
    parser.add_argument("--concurrency", type=int, default=4, help="calls in flight")
    args = parser.parse_args(list(argv))
    model_dir = resolve_model_dir(args.model)
    try:
        loaded = load_tokenizer_dir(model_dir)
    except ArtifactsError as e:
        print(f"mimo-serve bench tokenizer: {e} (pass --model DIR)", file=sys.stderr)
        return 2
    proc, target = (None, args.target) if args.target else start_server(model_dir)
    try:
        ours, limit = asyncio.run(run_rounds(args, loaded.tokenizer, target))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    ours_s, limit_s = statistics.median(ours), statistics.median(limit)
    print(
        f"tokenizer {model_dir.name} (vocab {loaded.info.vocab_size}), {args.batch_size} texts x {args.text_chars} chars "
        f"per call, {args.concurrency} in flight, {os.cpu_count()} CPUs, medians of {args.rounds} rounds"
    )
    print(
        f"tokenizer encode: service {fmt_rate(ours_s)} tok/s vs in-process {fmt_rate(limit_s)} tok/s -> ratio {ours_s / limit_s:.2f}"
    )
    return 0
