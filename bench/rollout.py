"""`mimo-serve bench rollout`: MiMo's Table 2 on sim workers: naive dynamic sampling against each step of the
seamless rollout engine, side by side on the same workers, the same prompt source (seeded, so every sample has
the same long-tailed length and the same modelled verdict in every mode) and the same verifier front, in
alternating rounds.

Every mode asks for `--target-valid` groups WITH reward variance from a source of `--prompts` prompts whose
pass rates follow a long-tailed mix (some never solved, some always, the rest Beta-distributed; ~41% on
average, MiMo's figure); zero-variance groups are dropped and not counted.

- naive: synchronous batches of `--sync-batch` prompts: generate, wait for the batch's last sample, score the
  batch, drop zero-variance groups, repeat until the target is met (surplus valid groups of the last batch are
  waste).
- continuous (each step adds to the one before): prompts launch as room frees (same in-flight limit as one batch), demand-driven (launch only while
  the valid groups done plus those the active groups are expected to give fall short); each group is scored
  once all its samples ended, its slots held until then; the rollout ends when every launched group has.
- async rewards: the same, but each sample is scored as it ends and frees its slot at once.
- early termination: the same, plus MiMo's launch-order early termination: the batch is the first target valid
  groups in launch order; once it is complete and every group launched before its last member has finished,
  the rest are aborted.

Worker idle: each worker's GetLoads is polled every few ms; a poll with nothing running or waiting counts as idle.
Slot idle: 1 - (mean running samples over all workers) / (the in-flight limit). Sample waste: the share of
launched samples that are in neither the training batch nor a zero-variance group (surplus valid groups, aborted
and unfinished samples). The last line is the headline: the full pipeline against naive dynamic sampling.
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
    "naive": "synchronous batches: generate, wait for the last sample, score, drop zero-variance, repeat",
    "continuous": "+ launch as room frees (demand-driven); a group scored when all its samples end, slots held",
    "async rewards": "+ each sample scored as it ends, its slot freed at once",
    "early termination": "+ MiMo's launch-order early termination: abort the rest once the batch is settled",
}
UNSOLVED, SOLVED = 0.22, 0.12  # shares of problems at pass rate 0 and 1; the rest Beta(1.4, 1.6)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mimo-serve bench rollout", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny settings (the smoke test)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (medians over rounds)")
    p.add_argument("--workers", type=int, default=4, help="sim workers")
    p.add_argument("--prompts", type=int, default=256, help="prompts in the source")
    p.add_argument("--target-valid", type=int, default=32, help="valid groups the training batch needs")
    p.add_argument("--samples", type=int, default=16, help="samples per prompt (n)")
    p.add_argument("--prompt-tokens", type=int, default=160)
    p.add_argument("--sync-batch", type=int, default=16, help="prompts per naive batch (= the in-flight limit)")
    p.add_argument("--oversampling", type=float, default=1.0, help="launch until expected valid = this x target")
    p.add_argument("--max-new-tokens", type=int, default=4096, help="cap on the profile's lognormal lengths")
    p.add_argument("--profile", default=str(PROFILES / "bench-rollout.json"))
    p.add_argument("--time-scale", type=float, default=0.25, help="sim time scale (also scales the verify hold)")
    p.add_argument("--verifier", choices=["auto", "service", "modelled"], default="auto")
    p.add_argument("--verify-s", type=float, default=1.0, help="modelled seconds each task holds a sandbox slot")
    p.add_argument("--verify-slots", type=int, default=64, help="sandbox slots (tasks verified at once)")
    p.add_argument("--poll-ms", type=float, default=15.0, help="GetLoads poll interval for the idle share")
    p.add_argument("--seed", type=int, default=11, help="prompts and pass rates")
    p.add_argument("--model", help="model dir with tokenizer files")
    p.add_argument("--log-dir", type=Path)
    return p


def _quick(args: argparse.Namespace) -> None:
    args.rounds, args.workers, args.prompts, args.samples, args.sync_batch = 1, 2, 32, 4, 4
    args.target_valid = 4
    args.max_new_tokens = min(args.max_new_tokens, 256)
    args.time_scale = min(args.time_scale, 0.01)
    args.verify_s = min(args.verify_s, 0.5)
    args.poll_ms = max(args.poll_ms, 20.0)


@dataclass(frozen=True, slots=True)
class Run:
    wall_s: float
    finished: rollout_pb2.RolloutFinished
    idle_share: float
    mean_running: float  # per worker
    router_cpu: float  # share of one core the router process used


def pass_rates(args: argparse.Namespace) -> dict[str, float]:
    """The source's modelled pass rates: long-tailed, ~41% on average."""
    rng = random.Random(args.seed + 1)
    out = {}
    for i in range(args.prompts):
        u = rng.random()
        out[f"p{i}"] = 0.0 if u < UNSOLVED else 1.0 if u < UNSOLVED + SOLVED else rng.betavariate(1.4, 1.6)
    return out


def request(args: argparse.Namespace, mode: str, vocab: int, rid: str) -> rollout_pb2.RolloutRequest:
    rng = random.Random(args.seed)
    prompts = [
        rollout_pb2.RolloutPrompt(
            prompt_id=f"p{i}",
            token_ids=common_pb2.TokenIds(ids=[rng.randrange(10, vocab) for _ in range(args.prompt_tokens)]),
            math=verifier_pb2.MathTask(references=[str(i)]),
        )
        for i in range(args.prompts)
    ]
    req = rollout_pb2.RolloutRequest(
        rollout_id=rid,
        prompts=prompts,
        samples_per_prompt=args.samples,
        sampling=common_pb2.SamplingParams(max_new_tokens=args.max_new_tokens, seed=1234),
        max_samples_in_flight=args.sync_batch * args.samples,
        target_valid_groups=args.target_valid,
        oversampling=args.oversampling,
    )
    if mode == "naive":
        req.mode = rollout_pb2.ROLLOUT_MODE_SYNCHRONOUS
        req.sync_batch_prompts = args.sync_batch
        return req
    req.mode = rollout_pb2.ROLLOUT_MODE_SEAMLESS
    per_group = mode == "continuous"
    req.reward_timing = rollout_pb2.REWARD_TIMING_PER_GROUP if per_group else rollout_pb2.REWARD_TIMING_PER_SAMPLE
    if mode == "early termination":
        req.early_termination = rollout_pb2.EARLY_TERMINATION_POLICY_LAUNCH_ORDER
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
        front = bench_verifier.DelayedVerifier(delay, upstream, pass_rates=pass_rates(args))
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


def waste(f: rollout_pb2.RolloutFinished) -> float:
    """Launched groups in neither the batch nor the zero-variance pile, over all launched (n samples each)."""
    used = len(f.selected_prompt_ids) + f.num_groups_zero_variance
    return 1 - used / f.num_prompts_launched if f.num_prompts_launched else 0.0


def report(args: argparse.Namespace, runs: dict[str, list[Run]], verdicts: str) -> int:
    limit = args.sync_batch * args.samples
    naive = median([r.wall_s for r in runs["naive"]])
    stats: dict[str, tuple[float, float, float, float]] = {}
    rows = []
    for mode, rs in runs.items():
        f = [r.finished for r in rs]
        wall = median([r.wall_s for r in rs])
        idle = median([r.idle_share for r in rs])
        slot_idle = median([1 - r.mean_running * args.workers / limit for r in rs])
        w = median([waste(x) for x in f])
        stats[mode] = (wall, idle, slot_idle, w)
        rows.append(
            [
                mode,
                f"{wall:.2f}",
                f"{ratio(naive, wall):.2f}x",
                f"{idle:.1%}",
                f"{slot_idle:.1%}",
                f"{w:.1%}",
                f"{median([len(x.selected_prompt_ids) for x in f]):.0f}/{args.target_valid}",
                f"{median([x.num_groups_zero_variance for x in f]):.0f}",
                f"{median([x.num_groups_surplus for x in f]):.0f}",
                f"{median([x.num_prompts_launched for x in f]):.0f}",
                f"{median([x.num_samples_aborted for x in f]):.0f}",
                f"{median([x.reward_wait_s for x in f]):.2f}",
                f"{median([r.router_cpu for r in rs]):.0%}",
            ]
        )
    rates = list(pass_rates(args).values())
    print(
        f"Rollout: {args.target_valid} valid groups x {args.samples} samples wanted from a source of {args.prompts} "
        f"prompts (modelled pass rates: {UNSOLVED:.0%} never solved, {SOLVED:.0%} always, the rest Beta(1.4, 1.6); "
        f"mean {sum(rates) / len(rates):.0%}); {args.workers} sim workers, profile {Path(args.profile).name} "
        f"(lognormal lengths, max_new_tokens {args.max_new_tokens}), time scale {args.time_scale:g}; in flight at "
        f"most {limit} samples (one naive batch of {args.sync_batch} prompts); oversampling {args.oversampling:g}; "
        f"{args.rounds} alternating rounds, medians"
    )
    print(
        f"verifier: {verdicts}; verdicts modelled from each problem's pass rate; each task holds one of "
        f"{args.verify_slots} sandbox slots for ~{args.verify_s:g} s modelled (lognormal sigma 0.5, x time scale)"
    )
    for mode, what in MODES.items():
        print(f"  {mode:<18} {what}")
    print(
        table(
            [
                "mode",
                "wall s",
                "speedup",
                "worker idle",
                "slot idle",
                "sample waste",
                "batch",
                "zero-var groups",
                "surplus groups",
                "launched",
                "aborted samples",
                "reward wait s",
                "router cpu",
            ],
            rows,
        )
    )
    full = stats["early termination"]
    base = stats["naive"]
    print(
        f"full pipeline vs naive dynamic sampling: wall-clock {full[0]:.2f} s vs {base[0]:.2f} s -> speedup "
        f"{ratio(base[0], full[0]):.2f}x; sample waste {full[3]:.1%} (naive {base[3]:.1%}); worker idle "
        f"{full[1]:.1%} (naive {base[1]:.1%}); slot idle {full[2]:.1%} (naive {base[2]:.1%})"
    )
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
