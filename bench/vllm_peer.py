"""vLLM's offline `LLM` API behind a JSON-lines pipe: runs inside the vLLM venv (`make vllm-venv`), stdlib + vllm.

`bench/vllm.py` and the parity test start it as `.venv-vllm/bin/python bench/vllm_peer.py MODEL [options]`.
It prints one `{"ready": ...}` line once the engine is up, then answers each request line
`{"prompts": [[ids]], "max_tokens": N, "logprobs": K}` with
`{"elapsed_s", "token_ids", "top2", "drafted", "accepted"}`: elapsed_s is the wall time of `LLM.generate` alone
(token ids in, token ids out, no detokenisation); top2 is [[id, logprob, id, logprob], ...] per generated token
when K >= 2. An empty line or end of input stops it. Diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vllm_peer")
    p.add_argument("model")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--mtp", action="store_true", help='speculative config {"method": "mtp", ...}, 1 draft token')
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--max-num-seqs", type=int, default=64)
    return p.parse_args(argv)


def counter(llm, name: str) -> int:
    """A counter from the engine's Prometheus snapshot (0 when absent)."""
    return int(sum(getattr(m, "value", 0) for m in llm.get_metrics() if m.name == name))


def top2(logprobs) -> list[list[float]]:
    """[[best id, its logprob, second id, its logprob], ...] for each generated token."""
    out = []
    for step in logprobs or []:
        (a, la), (b, lb) = sorted(step.items(), key=lambda kv: -kv[1].logprob)[:2]
        out.append([a, la.logprob, b, lb.logprob])
    return out


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    replies = os.fdopen(os.dup(1), "w")  # the protocol's own copy of stdout ...
    os.dup2(2, 1)  # ... while whatever vLLM prints goes to stderr
    sys.stdout = sys.stderr
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process: no IPC hop
    here = os.path.dirname(os.path.abspath(__file__))  # bench/ holds vllm.py: keep it from shadowing vLLM
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    start = time.perf_counter()
    spec = {"method": "mtp", "num_speculative_tokens": 1} if args.mtp else None
    llm = LLM(
        args.model,
        trust_remote_code=True,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        speculative_config=spec,
        seed=0,
        disable_log_stats=False,  # the spec-decode counters
    )
    ready = {"ready": True, "startup_s": time.perf_counter() - start, "version": __import__("vllm").__version__}
    print(json.dumps(ready), file=replies, flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        req = json.loads(line)
        sampling = SamplingParams(
            temperature=0.0,
            max_tokens=req["max_tokens"],
            ignore_eos=True,
            logprobs=req.get("logprobs"),
            detokenize=False,
        )
        prompts = [TokensPrompt(prompt_token_ids=p) for p in req["prompts"]]
        drafted = counter(llm, "vllm:spec_decode_num_draft_tokens")
        accepted = counter(llm, "vllm:spec_decode_num_accepted_tokens")
        begin, begin_cpu = time.perf_counter(), time.process_time()
        outs = llm.generate(prompts, sampling, use_tqdm=False)
        elapsed, cpu = time.perf_counter() - begin, time.process_time() - begin_cpu
        reply = {
            "elapsed_s": elapsed,
            "cpu_s": cpu,  # this process's CPU time (all its threads): what other jobs' load cannot inflate
            "token_ids": [list(o.outputs[0].token_ids) for o in outs],
            "top2": [top2(o.outputs[0].logprobs) for o in outs] if (req.get("logprobs") or 0) >= 2 else None,
            "drafted": counter(llm, "vllm:spec_decode_num_draft_tokens") - drafted,
            "accepted": counter(llm, "vllm:spec_decode_num_accepted_tokens") - accepted,
        }
        print(json.dumps(reply), file=replies, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
