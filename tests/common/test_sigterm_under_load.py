"""SIGTERM under load for the tokenizer, the verifier and a (sim) worker, each a real `mimo-serve` process.

Each test puts calls on the server that take a second or two, waits until the server has every one of them
(a metric it serves, or a stream's first message), sends SIGTERM, and asserts: every call already in flight
finishes with its real answer, a new call is refused with UNAVAILABLE, and the process exits 0. (The router:
tests/router/test_router_fuzz_chaos.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mimo_client.v1 import tokenizer_pb2, tokenizer_pb2_grpc
from mimo_client.v1 import verifier_pb2 as vpb
from mimo_client.v1 import verifier_pb2_grpc as vpb_grpc
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.common.net import free_port
from tests.support.router_stack import SIM_PROFILE
from tests.support.verifier_sandbox import fenced

REPO = Path(__file__).resolve().parents[2]
NUM_CALLS = 6


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    target: str
    metrics_port: int

    def metric(self, name: str) -> float:
        """The sum of the samples of `name` on the server's /metrics (0 when absent)."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        samples = [line.split()[-1] for line in text.splitlines() if line.split("{")[0].split(" ")[0] == name]
        return sum(float(v) for v in samples)


@contextlib.contextmanager
def serve(args: Sequence[str], log: Path) -> Iterator[Server]:
    port, metrics_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "services.cli", *args, "--listen", f"127.0.0.1:{port}"]
    cmd += ["--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1", "--grace-s", "20"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield Server(proc, f"127.0.0.1:{port}", metrics_port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.05)


async def serving(target: str) -> bool:
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            resp = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
    except grpc.aio.AioRpcError:
        return False
    return resp.status == health_pb2.HealthCheckResponse.SERVING


async def refused(target: str, probe: Callable[[grpc.aio.Channel], Awaitable[object]]) -> bool:
    """True once a new call on a fresh channel is refused with UNAVAILABLE (it is answered until the drain).

    A call whose connection was made just before the server began to stop is CANCELLED instead (grpc-core resets
    the stream at shutdown); it was never run, so it is not an in-flight failure, and the probe goes on.
    """
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            await probe(channel)
    except grpc.aio.AioRpcError as e:
        assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), e
        return e.code() == grpc.StatusCode.UNAVAILABLE
    return False


async def sigterm_under_load(
    server: Server,
    make_calls: Callable[[], Sequence[Awaitable[object]]],
    all_in_flight: Callable[[], Awaitable[bool]],
    probe: Callable[[grpc.aio.Channel], Awaitable[object]],
) -> list[object]:
    """Start `make_calls()` once the server is SERVING, SIGTERM once it has them all; their results, after the checks
    every server shares."""
    await until(lambda: serving(server.target), "the server is SERVING")
    done_at: list[float] = []

    async def timed(call: Awaitable[object]) -> object:
        result = await call
        done_at.append(time.monotonic())
        return result

    running = [asyncio.ensure_future(timed(c)) for c in make_calls()]
    await until(all_in_flight, "the server has every call")
    sent_at = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    await until(lambda: refused(server.target, probe), "a new call is refused", timeout_s=20)
    results = await asyncio.gather(*running)  # an in-flight call that failed raises here
    assert max(done_at) > sent_at  # calls were still running at SIGTERM: the drain, not luck, finished them
    assert await asyncio.to_thread(server.proc.wait, 30) == 0
    return list(results)


async def test_tokenizer_finishes_its_in_flight_encodes_then_exits_0(model_dir: Path, tmp_path: Path) -> None:
    rng = random.Random(0)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(3000)]
    texts = [" ".join(rng.choices(words, k=40_000)) for _ in range(NUM_CALLS)]  # ~230 KB each, ~0.15 s to encode
    with serve(["tokenizer", "--model", str(model_dir)], tmp_path / "tokenizer.log") as server:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = tokenizer_pb2_grpc.TokenizerStub(channel)

            def calls() -> list[Awaitable[object]]:
                return [stub.Tokenize(tokenizer_pb2.TokenizeRequest(texts=[t]), timeout=60) for t in texts]

            async def all_in_flight() -> bool:  # every text has reached the encoder (cache misses are counted there)
                return await asyncio.to_thread(server.metric, "mimo_tokenizer_cache_misses_total") >= NUM_CALLS

            def probe(ch: grpc.aio.Channel) -> Awaitable[object]:
                return tokenizer_pb2_grpc.TokenizerStub(ch).GetTokenizerInfo(
                    tokenizer_pb2.GetTokenizerInfoRequest(), timeout=2
                )

            replies = await sigterm_under_load(server, calls, all_in_flight, probe)
    assert all(len(r.encodings[0].ids) > 10_000 for r in replies)  # type: ignore[attr-defined]


def slow_sum(task_id: str) -> vpb.VerifyTask:
    source = "import time\ntime.sleep(1.5)\na, b = map(int, input().split())\nprint(a + b)\n"
    tests = [vpb.CodeTest(stdin="1 2", expected_stdout="3")]
    return vpb.VerifyTask(task_id=task_id, response=fenced(source), code=vpb.CodeTask(tests=tests, time_limit_s=2))


async def test_verifier_scores_its_in_flight_tasks_then_exits_0(tmp_path: Path) -> None:
    args = ["verifier", "--processes", "1", "--sandboxes", str(NUM_CALLS)]
    with serve(args, tmp_path / "verifier.log") as server:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = vpb_grpc.VerifierStub(channel)

            def calls() -> list[Awaitable[object]]:
                return [stub.Verify(vpb.VerifyRequest(tasks=[slow_sum(f"t{i}")]), timeout=60) for i in range(NUM_CALLS)]

            async def all_in_flight() -> bool:
                return await asyncio.to_thread(server.metric, "mimo_verifier_pending_tasks") >= NUM_CALLS

            def probe(ch: grpc.aio.Channel) -> Awaitable[object]:
                task = vpb.VerifyTask(task_id="new", response="\\boxed{4}", math=vpb.MathTask(references=["4"]))
                return vpb_grpc.VerifierStub(ch).Verify(vpb.VerifyRequest(tasks=[task]), timeout=2)

            replies = await sigterm_under_load(server, calls, all_in_flight, probe)
    assert [r.results[0].verdict for r in replies] == [vpb.VERDICT_CORRECT] * NUM_CALLS  # type: ignore[attr-defined]


async def test_worker_finishes_its_in_flight_streams_then_exits_0(model_dir: Path, tmp_path: Path) -> None:
    max_new = 120  # ~70 decode steps of 5 ms (MTP: ~1.76 tokens a step) x time scale 4: ~1.9 s a stream
    args = ["worker", "--engine", "sim", "--model", str(model_dir), "--profile", str(SIM_PROFILE)]
    args += ["--time-scale", "4"]
    params = pb.SamplingParams(temperature=0, max_new_tokens=max_new, ignore_eos=True)
    with serve(args, tmp_path / "worker.log") as server:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = pb_grpc.SglangSchedulerStub(channel)
            num_started = 0

            async def stream(i: int) -> list[pb.GenerateResponse]:
                nonlocal num_started
                tokens = pb.TokenizedInput(input_ids=[1, 2, 3])
                request = pb.GenerateRequest(request_id=f"r{i}", tokenized=tokens, sampling_params=params, stream=True)
                call = stub.Generate(request, timeout=60)
                msgs = [await call.read()]
                num_started += 1
                while (msg := await call.read()) is not grpc.aio.EOF:
                    msgs.append(msg)
                return msgs

            async def all_in_flight() -> bool:  # each stream has its first token
                return num_started == NUM_CALLS

            def probe(ch: grpc.aio.Channel) -> Awaitable[object]:
                return pb_grpc.SglangSchedulerStub(ch).GetLoads(pb.GetLoadsRequest(), timeout=2)

            def calls() -> list[Awaitable[object]]:
                return [stream(i) for i in range(NUM_CALLS)]

            replies = await sigterm_under_load(server, calls, all_in_flight, probe)
    for msgs in replies:
        complete = msgs[-1].complete  # type: ignore[index]
        assert complete.finish_reason == "length" and len(complete.output_ids) == max_new
