"""GRPO on the tiny MiMo, on CPU, with rollouts through MiMo Serve: `make grpo` (or python examples/grpo_tiny.py).

Each step:
1. a rollout through the router (SDK `MimoClient.rollout`): B training problems (models/tiny-mimo/corpus.py,
   held-out combinations excluded) x G samples at temperature 1, rewarded by the verifier service;
2. group-relative advantages (reward minus the group mean, over the group's std); groups with no reward
   variance carry no gradient and are dropped, as GRPO trainers do;
3. a policy-gradient step in torch on the returned prompt and response token ids: a PPO-clipped objective
   whose importance ratio is against the sampling logprobs the service returned with each sample
   (SampleFinished.logprobs, the worker's own; --passes > 1 makes later passes off-policy);
4. a checkpoint on disk (config, tokenizer, every tensor including the MTP layer) and the router's fleet update
   (SDK `update_weights`, mimo.v1.Admin): every worker paused, updated, checked and continued; the next rollout
   asks for the new version (`min_weight_version`) and every sample is checked to come from it.
Every few steps the held-out pass rate (greedy, one sample per problem) is measured through the service.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from mimo_client import MathTask, MimoClient, RolloutPrompt
from safetensors.torch import save_file
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "models" / "tiny-mimo"
sys.path[:0] = [str(TINY), str(ROOT)]

import corpus  # noqa: E402

from services.stack import Stack, random_ports_plan  # noqa: E402
from services.worker.model import MiMoForCausalLM, load_mimo  # noqa: E402

MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True, slots=True)
class Sample:
    prompt_ids: list[int]
    response_ids: list[int]
    sampling_logprobs: list[float]  # from the worker that sampled them (SampleFinished.logprobs)
    advantage: float


def prompt_of(problem: corpus.Problem, tokenizer: Tokenizer, index: int) -> RolloutPrompt:
    ids = tokenizer.encode(corpus.render_prompt(problem.question, "")).ids
    return RolloutPrompt(f"p{index}", token_ids=ids, reward=MathTask([str(problem.answer)]))


def rollout(client: MimoClient, prompts: list[RolloutPrompt], n: int, version: str, **sampling) -> list:
    events = client.rollout(
        prompts, samples_per_prompt=n, weight_version=version, min_weight_version=version, timeout_s=1800, **sampling
    )
    return [e for e in events if type(e).__name__ == "SampleFinished"]


def advantages(samples: list) -> list[Sample]:
    groups: dict[int, list] = {}
    for s in samples:
        groups.setdefault(s.prompt_index, []).append(s)
    out = []
    for group in groups.values():
        rewards = [s.reward for s in group]
        std = statistics.pstdev(rewards)
        if std == 0:
            continue
        mean = statistics.fmean(rewards)
        out += [
            Sample(list(s.prompt_token_ids), list(s.token_ids), list(s.logprobs), (s.reward - mean) / (std + 1e-6))
            for s in group
            if s.token_ids and len(s.logprobs) == len(s.token_ids)
        ]
    return out


def sequence_logprobs(model: MiMoForCausalLM, batch: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per response token: log p(token | prefix) [B, T] and a mask of real response tokens [B, T]."""
    width = max(len(s.prompt_ids) + len(s.response_ids) for s in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.bool)
    for i, s in enumerate(batch):
        seq = s.prompt_ids + s.response_ids
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, len(s.prompt_ids) : len(seq)] = True
    hidden = model(ids, torch.arange(width))  # right padding: causal attention never sees it
    logp = torch.log_softmax(model.compute_logits(hidden[:, :-1]).float(), -1)
    chosen = logp.gather(2, ids[:, 1:, None]).squeeze(2)
    return chosen, mask[:, 1:]


def sampled(batch: list[Sample]) -> torch.Tensor:
    """The sampling logprobs laid out like `sequence_logprobs` (row t predicts token t + 1)."""
    width = max(len(s.prompt_ids) + len(s.response_ids) for s in batch)
    out = torch.zeros(len(batch), width - 1)
    for i, s in enumerate(batch):
        start = len(s.prompt_ids) - 1
        out[i, start : start + len(s.response_ids)] = torch.tensor(s.sampling_logprobs)
    return out


def train_step(model: MiMoForCausalLM, opt: torch.optim.Optimizer, samples: list[Sample], args) -> float:
    if not samples:
        return 0.0
    old = [sampled(samples[i : i + args.micro_batch]) for i in range(0, len(samples), args.micro_batch)]
    total = 0.0
    for _ in range(args.passes):
        opt.zero_grad()
        for k, start in enumerate(range(0, len(samples), args.micro_batch)):
            batch = samples[start : start + args.micro_batch]
            new, mask = sequence_logprobs(model, batch)
            ratio = torch.exp(new - old[k])
            adv = torch.tensor([s.advantage for s in batch])[:, None]
            clipped = torch.minimum(ratio * adv, ratio.clamp(1 - args.clip, 1 + args.clip) * adv)
            loss = -(clipped * mask).sum() / mask.sum().clamp(min=1) * len(batch) / len(samples)
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return total / args.passes


def save_checkpoint(model: MiMoForCausalLM, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        shutil.copy(TINY / name, dest / name)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    assert any(".mtp_layers." in k for k in state), "the checkpoint must keep the MTP layer"
    save_file(state, str(dest / "model.safetensors"))
    return dest


def update_fleet(client: MimoClient, path: Path, version: str) -> float:
    result = client.update_weights(str(path), version, timeout_s=600)
    if result.failed:
        raise RuntimeError(f"workers failed the update to {version}: {[(w.worker, w.error) for w in result.failed]}")
    return result.wall_s


def held_out_rate(client: MimoClient, prompts: list[RolloutPrompt], version: str) -> float:
    samples = rollout(client, prompts, 1, version, temperature=0.0, max_new_tokens=400)
    return sum(s.reward > 0 for s in samples) / len(prompts)


async def main(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    shutil.rmtree(work, ignore_errors=True)
    start = save_checkpoint(load_mimo(TINY, "cpu", torch.float32), work / "step-0")
    tokenizer = Tokenizer.from_file(str(TINY / "tokenizer.json"))
    held_out = [prompt_of(p, tokenizer, i) for i, p in enumerate(corpus.held_out_problems(0, args.eval_per_level))]
    train = corpus.train_problems(0)
    if args.levels:
        wanted = {int(x) for x in args.levels.split(",")}
        train = (p for p in train if p.level in wanted)
    plan = random_ports_plan(start, engine="torch", num_workers=args.workers)
    stack = Stack(plan.specs(), work / "logs")
    await stack.start()
    model = load_mimo(start, "cpu", torch.float32).train()
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    rng = random.Random(args.seed)
    try:
        client = MimoClient(stack.child("router").spec.target)
        version = "default"
        base = held_out_rate(client, held_out, version)
        print(f"step 0: held-out pass rate {100 * base:.1f}% ({len(held_out)} problems, greedy)", flush=True)
        for step in range(1, args.steps + 1):
            t0 = time.perf_counter()
            problems = [next(train) for _ in range(args.prompts)]
            rng.shuffle(problems)
            prompts = [prompt_of(p, tokenizer, i) for i, p in enumerate(problems)]
            samples = rollout(client, prompts, args.samples, version, temperature=1.0, max_new_tokens=400)
            assert all(s.sample_weight_version == version for s in samples)
            reward = statistics.fmean(s.reward for s in samples)
            t1 = time.perf_counter()
            batch = advantages(samples)
            loss = train_step(model, opt, batch, args)
            version = f"step-{step}"
            path = save_checkpoint(model, work / version)
            update_s = update_fleet(client, path, version)
            line = (f"step {step}: reward {reward:.3f} over {len(samples)} samples, {len(batch)} with signal, "
                    f"loss {loss:+.4f}, rollout {t1 - t0:.1f}s, train {time.perf_counter() - t1 - update_s:.1f}s, "
                    f"update {update_s:.2f}s -> {version}")  # fmt: skip
            if step % args.eval_every == 0 or step == args.steps:
                rate = held_out_rate(client, held_out, version)
                line += f"; held-out pass rate {100 * rate:.1f}% ({100 * (rate - base):+.1f} points)"
            print(line, flush=True)
            if step > 1:
                shutil.rmtree(work / f"step-{step - 1}", ignore_errors=True)
        client.close()
    finally:
        await stack.stop()
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--prompts", type=int, default=8, help="problems per step")
    p.add_argument("--samples", type=int, default=8, help="samples per problem (the GRPO group)")
    p.add_argument("--levels", default="2,4", help="training levels (comma-separated; empty: all)")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--clip", type=float, default=0.2)
    p.add_argument("--passes", type=int, default=1, help="optimizer steps per rollout batch")
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--eval-per-level", type=int, default=25, help="held-out problems per level")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the trainer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default="/tmp/mimo-grpo")
    return p.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse())))
