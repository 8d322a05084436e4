"""Sampling settings, logprobs and stop conditions as a client sees them in the output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from services.worker.engine_api import GenerateInput, SamplingConfig
from services.worker.engines.torch import sampler
from services.worker.engines.torch.core import CoreConfig, EngineCore
from services.worker.model import load_mimo
from tests.support.torch_engine import greedy, make_core, random_model, run_all, tokens_of, write_model_dir

MODEL = random_model()
PROMPT = (4, 8, 15, 16, 23, 42)


def one(core: EngineCore, s: SamplingConfig, **kw) -> list:
    return run_all(core, [GenerateInput("q", PROMPT, s, **kw)])[("q", 0)]


def dense_greedy_logits(num: int) -> tuple[list[int], torch.Tensor]:
    ids = list(PROMPT)
    rows = []
    with torch.no_grad():
        for _ in range(num):
            logits = MODEL.compute_logits(MODEL(torch.tensor([ids]), torch.arange(len(ids))))[0, -1]
            rows.append(logits)
            ids.append(int(logits.argmax()))
    return ids[len(PROMPT) :], torch.stack(rows)


@pytest.mark.parametrize("is_mtp", [False, True])
def test_logprobs_are_the_model_log_softmax_with_top_k_alternatives(is_mtp: bool) -> None:
    expected_ids, logits = dense_greedy_logits(6)
    chunks = one(make_core(MODEL, is_mtp=is_mtp), greedy(6), return_logprob=True, top_logprobs_num=3)
    assert tokens_of(chunks) == expected_ids
    logprobs = [lp for c in chunks for lp in c.logprobs]
    tops = [t for c in chunks for t in c.top_logprobs]
    want = torch.log_softmax(logits, -1)
    assert torch.allclose(torch.tensor(logprobs), want.gather(1, torch.tensor(expected_ids)[:, None])[:, 0], atol=1e-4)
    for token, top, row in zip(expected_ids, tops, want, strict=True):
        assert len(top) == 3 and top[0][0] == token  # greedy: the chosen token is the most likely
        assert [t for t, _ in top] == row.topk(3).indices.tolist()


def test_top_k_one_and_tiny_top_p_sample_greedily() -> None:
    expected = tokens_of(one(make_core(MODEL), greedy(8)))
    assert tokens_of(one(make_core(MODEL), SamplingConfig(temperature=1.5, top_k=1, max_new_tokens=8))) == expected
    assert tokens_of(one(make_core(MODEL), SamplingConfig(temperature=1.0, top_p=1e-6, max_new_tokens=8))) == expected
    assert tokens_of(one(make_core(MODEL), SamplingConfig(temperature=1.0, min_p=1.0, max_new_tokens=8))) == expected


def test_a_strong_repetition_penalty_avoids_every_seen_token() -> None:
    chunks = one(make_core(MODEL), greedy(12, repetition_penalty=1e6))  # positive logits / 1e6, negative * 1e6
    out = tokens_of(chunks)
    assert not set(out) & set(PROMPT) and len(set(out)) == len(out)


def test_frequency_and_presence_penalties_lower_repeated_tokens() -> None:
    logits = torch.zeros(1, 5)
    s = SamplingConfig(frequency_penalty=0.5, presence_penalty=0.25)
    core = make_core(MODEL)
    core.add_request(GenerateInput("p", (0,), s))
    seq = core.scheduler.waiting[0]
    seq.token_ids += [3, 3, 1]
    rows = sampler.build_rows([seq], 1, None, 5, torch.device("cpu"))
    assert sampler.penalise(logits, rows)[0].tolist() == [0.0, -0.75, 0.0, -1.25, 0.0]


def test_min_new_tokens_hold_back_eos_then_it_stops() -> None:
    free = tokens_of(one(make_core(MODEL), greedy(8)))
    eos = free[2]
    core = EngineCore(MODEL, CoreConfig(num_blocks=256, block_size=4, max_context_length=512, eos_token_ids=(eos,)))
    stopped = one(core, greedy(8))
    assert tokens_of(stopped) == free[:3] and stopped[-1].matched_token_id == eos
    held = tokens_of(one(core, greedy(8, min_new_tokens=5)))
    assert eos not in held[:4] and len(held) >= 5
    assert tokens_of(one(core, greedy(8, ignore_eos=True))) == free


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model"))


def test_a_stop_string_ends_the_sample_with_the_matched_string(model_dir: Path) -> None:
    model = load_mimo(model_dir, "cpu", torch.float32)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    core = EngineCore(model, CoreConfig(num_blocks=512, max_context_length=4096), tokenizer)
    prompt = tuple(tokenizer.encode("Once upon a time").ids)
    free = tokens_of(run_all(core, [GenerateInput("f", prompt, greedy(24))])[("f", 0)])
    text = tokenizer.decode(free)
    stop = text[len(tokenizer.decode(free[:5])) :][:2]  # text that appears first with the 6th token or later
    assert stop.strip(), f"pick another prompt: {text!r}"
    done = run_all(core, [GenerateInput("s", prompt, greedy(24, stop=(stop,)))])[("s", 0)][-1]
    assert done.finish_reason == "stop" and done.matched_stop_str == stop
    out = list(done.output_ids)
    assert stop in tokenizer.decode(out) and stop not in tokenizer.decode(out[:-1]) and out == free[: len(out)]
