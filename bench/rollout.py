"""`mimo-serve bench rollout`: seamless rollout against the synchronous baseline, side by side on the same sim
workers, the same prompts (seeded, so every sample has the same long-tailed length in every mode) and the same
verifier, in alternating rounds.

- synchronous (the baseline, naive dynamic sampling): generate a batch of prompts x n samples, wait for the
  last sample, verify the whole batch, then the next batch, until the target number of groups is done.
- seamless + FIFO early termination (ours, MiMo's): samples start as soon as there is room (same in-flight
  limit as one synchronous batch), each sample is verified as it finishes, and once the target number of groups
  are complete the rest are aborted.
- seamless without early termination: the same, but every prompt runs to the end.

Worker idle share: each worker's GetLoads is polled every few ms; a poll with nothing running or waiting counts
as idle. The last line is the headline: wall-clock of seamless (FIFO) against synchronous.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from mimo_client.v1 import common_pb2, rollout_pb2, rollout_pb2_grpc, verifier_pb2
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from bench import verifier_front as bench_verifier
from bench.common import PROFILES, Proc, Procs, median, model_dir, ratio, say, table
from bench.grpo import flush

MODES = {
    "synchronous": "batch -> wait for its last sample -> verify batch -> next batch, until the target groups",
    "seamless+fifo": "continuous: start samples as room frees, verify each as it ends, abort the rest at the target",
    "seamless": "continuous with per-sample rewards, no early termination (every prompt runs to the end)",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mimo-serve bench rollout", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny settings (the smoke test)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (medians over rounds)")
    p.add_argument("--workers", type=int, default=4, help="sim workers")
    p.add_argument("--prompts", type=int, default=64, help="prompts per rollout")
    p.add_argument("--samples", type=int, default=16, help="samples per prompt (n)")
    p.add_argument("--prompt-tokens", type=int, default=160)
    p.add_argument("--sync-batch", type=int, default=16, help="prompts per synchronous batch (sync_batch_prompts)")
    p.add_argument("--target", type=float, default=0.75, help="share of prompts the rollout needs (FIFO target)")
    p.add_argument("--max-new-tokens", type=int, default=4096, help="cap on the profile's lognormal lengths")
    p.add_argument("--profile", default=str(PROFILES / "bench-rollout.json"))
    p.add_argument("--time-scale", type=float, default=0.25, help="sim time scale (also scales the verify hold)")
    p.add_argument("--verifier", choices=["auto", "service", "modelled"], default="auto")
    p.add_argument("--verify-s", type=float, default=1.0, help="modelled seconds each task holds a sandbox slot")
    p.add_argument("--verify-slots", type=int, default=64, help="sandbox slots (tasks verified at once)")
    p.add_argument("--poll-ms", type=float, default=15.0, help="GetLoads poll interval for the idle share")
    p.add_argument("--model", help="model dir with tokenizer files")
    p.add_argument("--log-dir", type=Path)
    return p


def _quick(args: argparse.Namespace) -> None:
    args.rounds, args.workers, args.prompts, args.samples, args.sync_batch = 1, 2, 8, 4, 4
    args.max_new_tokens = min(args.max_new_tokens, 256)
    args.time_scale = min(args.time_scale, 0.01)
    args.verify_s = min(args.verify_s, 0.5)
    args.poll_ms = max(args.poll_ms, 20.0)


@dataclass(frozen=True, slots=True)
class Run:
    wall_s: float
    finished: rollout_pb2.RolloutFinished
    idle_share: float
    mean_running: float
    router_cpu: float  # share of one core the router process used


def request(args: argparse.Namespace, mode: str, vocab: int, rid: str) -> rollout_pb2.RolloutRequest:
    rng = random.Random(11)
    prompts = [
        rollout_pb2.RolloutPrompt(
            prompt_id=f"p{i}",
            token_ids=common_pb2.TokenIds(ids=[rng.randrange(10, vocab) for _ in range(args.prompt_tokens)]),
            math=verifier_pb2.MathTask(references=[str(i)]),
        )
        for i in range(args.prompts)
    ]
    target = max(1, round(args.target * args.prompts))
    req = rollout_pb2.RolloutRequest(
        rollout_id=rid,
        prompts=prompts,
        samples_per_prompt=args.samples,
        sampling=common_pb2.SamplingParams(max_new_tokens=args.max_new_tokens, seed=1234),
        max_samples_in_flight=args.sync_batch * args.samples,
    )
    if mode == "synchronous":
        req.mode = rollout_pb2.ROLLOUT_MODE_SYNCHRONOUS
        req.sync_batch_prompts = args.sync_batch
    else:
        req.mode = rollout_pb2.ROLLOUT_MODE_SEAMLESS
    if mode != "seamless":
        req.early_termination = rollout_pb2.EARLY_TERMINATION_POLICY_FIFO
        req.target_prompts = target
    return req


class IdlePoller:
    """Polls every worker's GetLoads; counts polls with nothing running or waiting."""

    def __init__(self, workers: Sequence[Proc], interval_s: float) -> None:
        self.interval_s = interval_s
        self._channels = [grpc.aio.insecure_channel(w.target) for w in workers]
        self.polls = self.idle = self.running = 0
        self._task: asyncio.Task[None] | None = None

    async def _poll(self, channel: grpc.aio.Channel) -> None:
        stub = pb_grpc.SglangSchedulerStub(channel)
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                load = (await stub.GetLoads(pb.GetLoadsRequest(), timeout=1)).loads[0]
                self.polls += 1
                self.running += load.num_running_reqs
                self.idle += load.num_running_reqs == 0 and load.num_waiting_reqs == 0
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self.polls = self.idle = self.running = 0
        self._task = asyncio.gather(*(self._poll(c) for c in self._channels))  # type: ignore[assignment]

    async def stop(self) -> tuple[float, float]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.idle / max(1, self.polls), self.running / max(1, self.polls)

    async def close(self) -> None:
        for c in self._channels:
            await c.close()


async def one_run(
    stub: rollout_pb2_grpc.RolloutStub, req: rollout_pb2.RolloutRequest, poller: IdlePoller, router: Proc
) -> Run:
    poller.start()
    cpu0, t0 = router.cpu_s(), time.perf_counter()
    finished = None
    try:
        async for event in stub.Rollout(req, timeout=3600):
            if event.HasField("finished"):
                finished = event.finished
    finally:
        wall = time.perf_counter() - t0
        idle, running = await poller.stop()
    if finished is None:
        raise RuntimeError("rollout stream ended without a RolloutFinished event")
    return Run(wall, finished, idle, running, (router.cpu_s() - cpu0) / wall)


async def _verifier(args: argparse.Namespace, procs: Procs) -> tuple[str | None, str]:
    if args.verifier == "modelled":
        return None, "modelled verdicts (--verifier modelled)"
    try:
        proc = await procs.verifier()
        return proc.target, "real verifier service (mimo-serve verifier), math tasks"
    except (RuntimeError, TimeoutError) as e:
        if args.verifier == "service":
            raise
        say(f"verifier service unavailable, verdicts modelled: {str(e).splitlines()[0]}")
        return None, "modelled verdicts: the verifier service did not start (--verifier auto)"


async def run(args: argparse.Namespace, model: Path, log_dir: Path) -> int:
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(model / "tokenizer.json")).get_vocab_size(with_added_tokens=False)
    procs = Procs(log_dir, model)
    delay = bench_verifier.VerifyDelay(args.verify_s, 0.5, args.verify_slots, args.time_scale)
    try:
        upstream, verdicts = await _verifier(args, procs)
        front = bench_verifier.DelayedVerifier(delay, upstream)
        server, front_target = await bench_verifier.serve(front)
        workers = await procs.workers(args.workers, Path(args.profile), args.time_scale)
        tok = await procs.tokenizer()
        router = await procs.router(workers, tok, "cache_aware", verifier=front_target)
        poller = IdlePoller(workers, args.poll_ms / 1000)
        runs: dict[str, list[Run]] = {m: [] for m in MODES}
        names = list(MODES)
        async with grpc.aio.insecure_channel(router.target) as channel:
            stub = rollout_pb2_grpc.RolloutStub(channel)
            for r in range(args.rounds):
                for mode in names[r % len(names) :] + names[: r % len(names)]:
                    await flush(workers)
                    got = await one_run(stub, request(args, mode, vocab, f"{mode}-{r}"), poller, router)
                    runs[mode].append(got)
                    say(f"round {r + 1}/{args.rounds} {mode}: {got.wall_s:.2f} s, idle {got.idle_share:.0%}")
        await poller.close()
        await server.stop(None)
        await front.close()
    finally:
        procs.stop()
    return report(args, runs, verdicts)


def report(args: argparse.Namespace, runs: dict[str, list[Run]], verdicts: str) -> int:
    target = max(1, round(args.target * args.prompts))
    rows = []
    for mode, rs in runs.items():
        f = [r.finished for r in rs]
        rows.append(
            [
                mode,
                f"{median([r.wall_s for r in rs]):.2f}",
                f"{median([x.num_prompts_finished for x in f]):.0f}/{args.prompts}",
                f"{median([x.num_samples_finished for x in f]):.0f}",
                f"{median([x.num_samples_aborted for x in f]):.0f}",
                f"{median([x.samples_per_s for x in f]):.1f}",
                f"{median([x.completion_tokens_per_s for x in f]):.0f}",
                f"{median([r.idle_share for r in rs]):.0%}",
                f"{median([r.mean_running for r in rs]):.1f}",
                f"{median([x.reward_wait_s for x in f]):.2f}",
                f"{median([r.router_cpu for r in rs]):.0%}",
            ]
        )
    print(
        f"Rollout: {args.prompts} prompts x {args.samples} samples, target {target} groups "
        f"({args.target:.0%}); {args.workers} sim workers, profile {Path(args.profile).name} (lognormal lengths, "
        f"ignore_eos off, max_new_tokens {args.max_new_tokens}), time scale {args.time_scale:g}; in flight at most "
        f"{args.sync_batch * args.samples} samples (one synchronous batch of {args.sync_batch} prompts); "
        f"{args.rounds} alternating rounds, medians"
    )
    print(
        f"verifier: {verdicts}; each task holds one of {args.verify_slots} sandbox slots for ~{args.verify_s:g} s "
        f"modelled (lognormal sigma 0.5, x time scale)"
    )
    for mode, what in MODES.items():
        print(f"  {mode:<14} {what}")
    print(
        table(
            [
                "mode",
                "wall s",
                "groups done",
                "samples done",
                "aborted/unstarted",
                "samples/s",
                "tokens/s",
                "worker idle",
                "mean running/worker",
                "reward wait s",
                "router cpu",
            ],
            rows,
        )
    )
    sync = median([r.wall_s for r in runs["synchronous"]])
    fifo = median([r.wall_s for r in runs["seamless+fifo"]])
    full = median([r.wall_s for r in runs["seamless"]])
    groups = {m: median([r.finished.num_prompts_finished / r.wall_s for r in rs]) for m, rs in runs.items()}
    print(
        f"seamless without early termination ({args.prompts} groups) vs synchronous ({target}+ groups): "
        f"wall-clock {ratio(sync, full):.2f}x, groups/s {ratio(groups['seamless'], groups['synchronous']):.2f}x"
    )
    print(f"rollout wall-clock: seamless {fifo:.2f} s vs synchronous {sync:.2f} s -> speedup {ratio(sync, fifo):.2f}")
    return 0


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if args.quick:
        _quick(args)
    with tempfile.TemporaryDirectory(prefix="mimo-bench-rollout-") as tmp:
        model = model_dir(args.model, Path(tmp))
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(run(args, model, args.log_dir or Path(tmp) / "logs"))
    return 130
