"""Train the tiny MiMo: corpus, tokenizer, model (next-token + 0.3 x MTP loss), then the HF-format files.

python models/tiny-mimo/train.py --device cpu --minutes 20 --out models/tiny-mimo
"""

from __future__ import annotations

import argparse
import itertools
import math
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]  # this folder (corpus, artifacts) and the repo root

import artifacts  # noqa: E402
import corpus  # noqa: E402
import evaluate  # noqa: E402

from services.worker.model.mimo import MiMoConfig, MiMoForCausalLM  # noqa: E402

MTP_LOSS_WEIGHT = 0.3
TOKENIZER_TEXTS = 20_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="fixes corpus, held-out split, tokenizer and init")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument("--minutes", type=float, default=20.0, help="training time budget (the LR schedule follows it)")
    p.add_argument("--steps", type=int, default=None, help="a fixed step count instead of (or below) --minutes")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--pool-size", type=int, default=100_000, help="training problems generated up front")
    p.add_argument("--vocab-size", type=int, default=1024, help="BPE target; the corpus may support fewer")
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--eval-per-level", type=int, default=100, help="held-out problems per level after training")
    return p.parse_args(argv)


def model_config(args: argparse.Namespace, vocab_size: int) -> MiMoConfig:
    head_dim = 32
    return MiMoConfig(
        vocab_size=math.ceil(vocab_size / 64) * 64,  # padded like MiMo's embedding rows
        hidden_size=args.hidden_size,
        intermediate_size=int(args.hidden_size * 2.6875),  # 688 for 256, Qwen2's FFN ratio
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.hidden_size // head_dim,
        num_key_value_heads=max(1, args.hidden_size // head_dim // 4),
        head_dim=head_dim,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        attention_bias=True,
        tie_word_embeddings=False,
        num_nextn_predict_layers=1,
        bos_token_id=artifacts.ENDOFTEXT_ID,
        eos_token_id=artifacts.IM_END_ID,
        torch_dtype="bfloat16",
    )


def chat_prompt(problem: corpus.Problem, index: int) -> str:
    # Mostly MiMo's recommended empty system prompt; every fifth the template's default one.
    return corpus.render_prompt(problem.question, None if index % 5 == 4 else "")


def encode_pool(tokenizer, problems: list[corpus.Problem]) -> tuple[Tensor, Tensor, Tensor]:
    """ids [N, L] right-padded, prompt_lens [N], total_lens [N]; loss falls on the assistant tokens."""
    prompts = tokenizer.encode_batch([chat_prompt(p, i) for i, p in enumerate(problems)])
    answers = tokenizer.encode_batch([p.completion + artifacts.IM_END for p in problems])
    rows = [a.ids + b.ids for a, b in zip(prompts, answers, strict=True)]
    max_len = max(map(len, rows))
    ids = torch.zeros(len(rows), max_len, dtype=torch.int32)  # 0 = <|endoftext|> as padding
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.int32)
    prompt_lens = torch.tensor([len(a.ids) for a in prompts])
    total_lens = torch.tensor(list(map(len, rows)))
    return ids, prompt_lens, total_lens


def init_weights(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


def losses(model: MiMoForCausalLM, ids: Tensor, loss_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Next-token CE and MTP CE (x_{t+2} from h_t and x_{t+1}), each averaged over assistant targets."""
    positions = torch.arange(ids.shape[1], device=ids.device)
    hidden = model(ids, positions)  # [B, T, H]
    logits = model.compute_logits(hidden[:, :-1])  # predicts ids[:, 1:]
    ntp = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
    ntp = (ntp * loss_mask[:, 1:].flatten()).sum() / loss_mask[:, 1:].sum()
    mtp_hidden = model.mtp_forward(hidden[:, :-2], ids[:, 1:-1], positions[:-2])  # predicts ids[:, 2:]
    mtp_logits = model.compute_logits(mtp_hidden)
    mtp = F.cross_entropy(mtp_logits.flatten(0, 1), ids[:, 2:].flatten(), reduction="none")
    mtp = (mtp * loss_mask[:, 2:].flatten()).sum() / loss_mask[:, 2:].sum()
    return ntp, mtp


def lr_at(progress: float, peak: float, warmup: float = 0.03) -> float:
    if progress < warmup:
        return peak * progress / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


def train(args: argparse.Namespace, model: MiMoForCausalLM, pool: tuple[Tensor, Tensor, Tensor]) -> dict:
    ids_all, prompt_lens, total_lens = pool
    by_length = torch.argsort(total_lens, stable=True)
    halves = (by_length[: len(by_length) // 2], by_length[len(by_length) // 2 :])
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(args.seed)
    optim = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    budget_s, started, step = args.minutes * 60, time.monotonic(), 0
    max_steps = args.steps or 10**9
    while True:
        elapsed = time.monotonic() - started
        progress = max(step / max_steps, elapsed / budget_s)
        if progress >= 1.0:
            break
        lr = lr_at(max((step + 1) / max_steps, progress), args.lr)
        for group in optim.param_groups:
            group["lr"] = lr
        half = halves[step % 2]  # short and long problems in turn: less padding, same mix
        idx = half[torch.randint(len(half), (args.batch_size,), generator=gen)]
        length = int(total_lens[idx].max())
        ids = ids_all[idx, :length].long().to(device)
        cols = torch.arange(length)
        mask = (cols >= prompt_lens[idx, None]) & (cols < total_lens[idx, None])  # assistant tokens
        ntp, mtp = losses(model, ids, mask.float().to(device))
        optim.zero_grad(set_to_none=True)
        (ntp + MTP_LOSS_WEIGHT * mtp).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        step += 1
        if step % 50 == 0 or step == 1:
            print(f"step {step} {elapsed:.0f}s lr {lr:.2e} ntp {ntp.item():.4f} mtp {mtp.item():.4f}")
    return {"steps": step, "seconds": round(time.monotonic() - started), "ntp": ntp.item(), "mtp": mtp.item()}


def write_readme(out: Path, command: str, args: argparse.Namespace, cfg: MiMoConfig, stats: dict, report: str) -> None:
    num_params = stats["num_params"]
    template = (HERE / "README.template.md").read_text()
    out.joinpath("README.md").write_text(
        template.format(
            command=command,
            seed=args.seed,
            device=stats["device_name"],
            steps=stats["steps"],
            minutes=stats["seconds"] / 60,
            batch_size=args.batch_size,
            lr=args.lr,
            ntp=stats["ntp"],
            mtp=stats["mtp"],
            num_params=num_params,
            num_mtp_params=stats["num_mtp_params"],
            hidden=cfg.hidden_size,
            layers=cfg.num_hidden_layers,
            heads=cfg.num_attention_heads,
            kv_heads=cfg.num_key_value_heads,
            ffn=cfg.intermediate_size,
            vocab=cfg.vocab_size,
            tokenizer_vocab=stats["tokenizer_vocab"],
            size_mb=stats["size_bytes"] / 1e6,
            report=report,
        )
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python models/tiny-mimo/train.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    problems = list(itertools.islice(corpus.train_problems(args.seed), args.pool_size))
    texts = (chat_prompt(p, i) + p.completion for i, p in enumerate(problems[:TOKENIZER_TEXTS]))
    tokenizer = artifacts.train_tokenizer(texts, args.vocab_size)
    special_ids = [tokenizer.token_to_id(t) for t in artifacts.SPECIAL_TOKENS]
    assert special_ids == [artifacts.ENDOFTEXT_ID, artifacts.IM_START_ID, artifacts.IM_END_ID], special_ids
    pool = encode_pool(tokenizer, problems)
    print(f"{len(problems)} problems, tokenizer {tokenizer.get_vocab_size()} tokens, longest {pool[0].shape[1]}")

    cfg = model_config(args, tokenizer.get_vocab_size())
    model = MiMoForCausalLM(cfg)
    init_weights(model)
    model.to(args.device).train()
    stats = train(args, model, pool)

    bos, eos = artifacts.ENDOFTEXT_ID, artifacts.IM_END_ID
    tokenizer.save(str(args.out / "tokenizer.json"))
    artifacts.write_json(args.out / "tokenizer_config.json", artifacts.tokenizer_config(cfg.max_position_embeddings))
    artifacts.write_json(args.out / "generation_config.json", artifacts.generation_config(bos, eos, bos))
    artifacts.write_json(args.out / "config.json", artifacts.with_auto_map(cfg.to_hf_dict()))
    artifacts.copy_remote_code(args.out)
    weights = args.out / "model.safetensors"
    metadata = {"seed": str(args.seed), "command": command}
    artifacts.save_weights(model.state_dict(), weights, torch.bfloat16, metadata)

    report = evaluate.run(args.out, args.device, args.seed, args.eval_per_level) if args.eval_per_level else "(skipped)"
    stats |= {
        "num_params": sum(p.numel() for p in model.parameters()),
        "num_mtp_params": sum(p.numel() for p in model.model.mtp_layers.parameters()),
        "tokenizer_vocab": tokenizer.get_vocab_size(),
        "size_bytes": weights.stat().st_size,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "CPU",
    }
    write_readme(args.out, command, args, cfg, stats, report)
    print(f"trained {stats['steps']} steps in {stats['seconds']}s")
    print(report)


if __name__ == "__main__":
    main()
