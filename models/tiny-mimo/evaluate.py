"""Greedy evaluation of a tiny MiMo on its held-out problems: share of correct \\boxed{} answers, MTP acceptance.

python models/tiny-mimo/evaluate.py --model models/tiny-mimo
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from tokenizers import Tokenizer

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]  # this folder (corpus) and the repo root

import corpus  # noqa: E402

from services.worker.model import KVCache, MiMoForCausalLM, load_mimo  # noqa: E402

BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


@dataclass(frozen=True, slots=True)
class Generation:
    token_ids: list[list[int]]  # per sequence, up to and including the stop token
    num_drafts: int  # decode steps that had an MTP draft to check
    num_accepted: int  # of those, steps whose draft equalled the greedy token


@torch.inference_mode()
def generate_greedy(model: MiMoForCausalLM, prompts: list[list[int]], max_new_tokens: int, stop_id: int) -> Generation:
    """Greedy decoding of a batch of left-padded prompts with KV caches; MTP drafts one token ahead each step."""
    device = model.lm_head.weight.device
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    width = int(lengths.max())
    prompt_ids = torch.tensor([[stop_id] * (width - len(p)) + p for p in prompts], device=device)  # [B, P]
    key_mask = torch.arange(width, device=device)[None] >= (width - lengths)[:, None]  # [B, P], False on padding
    positions = (torch.arange(width, device=device)[None] - (width - lengths)[:, None]).clamp(min=0)  # [B, P]
    caches, mtp_cache = model.new_kv_caches(), KVCache()
    hidden = model(prompt_ids, positions, caches, key_mask)  # [B, P, H]
    token = model.compute_logits(hidden[:, -1]).argmax(-1)  # [B]
    mtp_inputs = torch.cat([prompt_ids[:, 1:], token[:, None]], dim=1)  # x_{t+1} for every t
    mtp_hidden = model.mtp_forward(hidden, mtp_inputs, positions, mtp_cache, key_mask)
    draft = model.compute_logits(mtp_hidden[:, -1]).argmax(-1)  # guesses the token after `token`
    tokens, finished = [token], token == stop_id
    num_drafts = num_accepted = 0
    for step in range(max_new_tokens - 1):
        if bool(finished.all()):
            break
        position = (lengths + step)[:, None]  # [B, 1]
        key_mask = torch.cat([key_mask, key_mask.new_ones(len(prompts), 1)], dim=1)
        hidden = model(token[:, None], position, caches, key_mask)  # [B, 1, H]
        next_token = model.compute_logits(hidden[:, -1]).argmax(-1)  # [B]
        active = ~finished
        num_drafts += int(active.sum())
        num_accepted += int(((next_token == draft) & active).sum())
        mtp_hidden = model.mtp_forward(hidden, next_token[:, None], position, mtp_cache, key_mask)
        draft = model.compute_logits(mtp_hidden[:, -1]).argmax(-1)
        token = next_token
        tokens.append(token)
        finished |= token == stop_id
    rows = torch.stack(tokens, dim=1).tolist()
    cut = [row[: row.index(stop_id) + 1] if stop_id in row else row for row in rows]
    return Generation(cut, num_drafts, num_accepted)


def boxed_answer(text: str) -> str | None:
    found = BOXED.findall(text)
    return found[-1].strip() if found else None


def training_seed(model_dir: Path) -> int:
    with safe_open(model_dir / "model.safetensors", framework="pt") as f:
        return int((f.metadata() or {}).get("seed", 0))


def run(model_dir: Path, device: str, seed: int | None, per_level: int, batch_size: int = 128) -> str:
    """Evaluate and return the printed report."""
    started = time.monotonic()
    seed = training_seed(model_dir) if seed is None else seed
    model = load_mimo(model_dir, device, torch.float32)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    stop_id = tokenizer.token_to_id("<|im_end|>")
    problems = corpus.held_out_problems(seed, per_level)
    prompts = [tokenizer.encode(corpus.render_prompt(p.question, "")).ids for p in problems]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths pad little
    correct: dict[int, int] = defaultdict(int)
    num_drafts = num_accepted = 0
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        gen = generate_greedy(model, [prompts[i] for i in chunk], 400, stop_id)
        num_drafts, num_accepted = num_drafts + gen.num_drafts, num_accepted + gen.num_accepted
        for i, ids in zip(chunk, gen.token_ids, strict=True):
            answer = boxed_answer(tokenizer.decode(ids, skip_special_tokens=False))
            correct[problems[i].level] += answer == str(problems[i].answer)
    lines = [f"held-out problems: {len(problems)} (seed {seed}, greedy, empty system prompt)"]
    for level in corpus.LEVELS:
        lines.append(f"level {level}: {correct[level]}/{per_level} = {100 * correct[level] / per_level:.1f}% correct")
    overall = sum(correct.values()) / len(problems)
    lines.append(f"overall: {100 * overall:.1f}% correct")
    lines.append(f"MTP acceptance: {num_accepted / max(1, num_drafts):.3f} ({num_accepted}/{num_drafts} decode steps)")
    lines.append(f"eval time: {time.monotonic() - started:.0f}s on {device}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=HERE)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=None, help="defaults to the seed stored in model.safetensors")
    p.add_argument("--per-level", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args()
    torch.manual_seed(0)
    print(run(args.model, args.device, args.seed, args.per_level, args.batch_size))


if __name__ == "__main__":
    main()
