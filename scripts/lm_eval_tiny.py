"""`make lm-eval`: lm-eval-harness's `local-chat-completions` client, unchanged, against the router's HTTP API.

1. Writes the task's data (bench/lm_eval/*.jsonl): `--per-level` held-out problems of each level from the tiny
   model's own generator (models/tiny-mimo/corpus.py), the same problems `evaluate.py --per-level N` scores.
2. Starts the stack on the tiny model as `mimo-serve up` does (services.stack), on free ports.
3. Runs `lm_eval` from .venv-lmeval on the task group `tiny_mimo_arith` (bench/lm_eval), greedy, then stops the stack.

`--reference` also scores the same problems in-process with evaluate.py's greedy decoder and the prompt lm-eval
sends: lm-eval cannot send an empty system message, so the template's default system prompt is used, where
evaluate.py's own figure uses MiMo's empty one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "models" / "tiny-mimo"
TASK_DIR = REPO / "bench" / "lm_eval"
sys.path[:0] = [str(TINY), str(REPO)]  # corpus.py and evaluate.py, and the services package

import corpus  # noqa: E402

from services.stack import Stack, random_ports_plan, wait_routable  # noqa: E402

SEED = 0  # the shipped checkpoint's training seed (model.safetensors metadata)


def write_data(per_level: int) -> list[corpus.Problem]:
    """One JSONL per level, {"level", "question", "answer"}; returns the problems in file order."""
    problems = corpus.held_out_problems(SEED, per_level)
    for level in corpus.LEVELS:
        rows = [
            {"level": p.level, "question": p.question, "answer": str(p.answer)} for p in problems if p.level == level
        ]
        path = TASK_DIR / f"tiny_mimo_arith_level{level}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return problems


def wait_http_health(base_url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base_url}/health not 200 after {timeout_s:.0f}s")
        time.sleep(0.2)


def lm_eval_command(args: argparse.Namespace, base_url: str) -> list[str]:
    model_args = ",".join(
        [
            f"base_url={base_url}/v1/chat/completions",
            "model=mimo",
            f"num_concurrent={args.num_concurrent}",
            "tokenized_requests=False",
            "max_retries=1",
            "timeout=600",
        ]
    )
    return [
        str(args.lm_eval),
        "run",
        "--model",
        "local-chat-completions",
        "--model_args",
        model_args,
        "--tasks",
        "tiny_mimo_arith",
        "--include_path",
        str(TASK_DIR),
        "--apply_chat_template",
        "--output_path",
        str(args.out),
        "--log_samples",
    ]


async def run_stack_and_lm_eval(args: argparse.Namespace) -> int:
    plan = random_ports_plan(TINY, engine="torch", num_workers=args.workers)
    stack = Stack(plan.specs(), args.out / "logs")
    base_url = f"http://127.0.0.1:{plan.http_port}"
    print(f"starting the stack ({args.workers} torch workers on {TINY.name}), logs in {stack.log_dir}/", flush=True)
    await stack.start()
    try:
        await wait_routable(stack.child("router").spec.target, args.workers, timeout_s=180)
        await asyncio.to_thread(wait_http_health, base_url, 60)
        command = lm_eval_command(args, base_url)
        print("$ " + " ".join(command), flush=True)
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(*command, cwd=REPO)  # data_files are relative to the repo
        code = await process.wait()
        print(f"lm_eval exited with {code} after {time.monotonic() - started:.0f}s", flush=True)
        return code
    finally:
        await stack.stop()


def reference(problems: list[corpus.Problem]) -> str:
    """evaluate.py's greedy decoder on the same problems, with the prompt the router renders for lm-eval."""
    import evaluate
    import torch
    from tokenizers import Tokenizer

    model = evaluate.load_mimo(TINY, "cpu", torch.float32)
    tokenizer = Tokenizer.from_file(str(TINY / "tokenizer.json"))
    stop_id = tokenizer.token_to_id("<|im_end|>")
    prompts = [tokenizer.encode(corpus.render_prompt(p.question, None)).ids for p in problems]
    gen = evaluate.generate_greedy(model, prompts, 400, stop_id)
    correct = {level: 0 for level in corpus.LEVELS}
    for problem, ids in zip(problems, gen.token_ids, strict=True):
        answer = evaluate.boxed_answer(tokenizer.decode(ids, skip_special_tokens=False))
        correct[problem.level] += answer == str(problem.answer)
    per_level = " / ".join(f"{correct[level]}" for level in corpus.LEVELS)
    total = sum(correct.values())
    return f"reference (evaluate.py greedy, default system prompt): {total}/{len(problems)}, levels {per_level}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--per-level",
        type=int,
        default=25,
        help="held-out problems per level (rewrites bench/lm_eval/*.jsonl; 25 is what is committed)",
    )
    p.add_argument("--workers", type=int, default=2, help="torch workers in the stack")
    p.add_argument("--num-concurrent", type=int, default=8, help="lm-eval's concurrent requests")
    p.add_argument("--lm-eval", type=Path, default=REPO / ".venv-lmeval" / "bin" / "lm_eval")
    p.add_argument("--out", type=Path, default=REPO / "out" / "lm_eval", help="lm-eval's results and the stack logs")
    p.add_argument("--data-only", action="store_true", help="write the task's data and stop")
    p.add_argument("--reference", action="store_true", help="also score the same problems in-process")
    args = p.parse_args()
    problems = write_data(args.per_level)
    print(f"wrote {len(problems)} held-out problems to {TASK_DIR.relative_to(REPO)}/", flush=True)
    if args.data_only:
        return 0
    if not args.lm_eval.exists():
        print(f"lm_eval_tiny: --lm-eval: {args.lm_eval} does not exist (make lm-eval creates it)", file=sys.stderr)
        return 2
    code = asyncio.run(run_stack_and_lm_eval(args))
    if args.reference:
        print(reference(problems), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
