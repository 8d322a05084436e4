"""The torch engine's grammar masks (llguidance) on the tiny MiMo's tokenizer: what a constraint allows, MTP's
draft row (mask after the draft, matcher unchanged), independent copies per sample, and clear compile errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from services.worker.engine_api import InvalidRequest
from services.worker.engines.torch.grammar import GrammarCompiler, banned

EOS = 2


@pytest.fixture(scope="module")
def compiler(tiny_model) -> GrammarCompiler:
    tokenizer = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    vocab = json.loads((tiny_model / "config.json").read_text())["vocab_size"]
    return GrammarCompiler(tokenizer, vocab, [EOS])


def walk(compiler: GrammarCompiler, kind: str, text: str, seed: int, limit: int = 200) -> list[int]:
    """Random tokens among the allowed ones until EOS: a worst-case sampler that follows only the mask."""
    rng, grammar, out = np.random.default_rng(seed), compiler.grammar(kind, text), []
    for _ in range(limit):
        allowed = np.flatnonzero(grammar.allowed())
        token = EOS if EOS in allowed and rng.random() < 0.3 else int(rng.choice(allowed))
        if token == EOS:
            return out
        out.append(token)
        grammar.advance([token])
    return out


def test_a_regex_only_ever_allows_matching_text(compiler, tiny_model):
    tokenizer = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    for seed in range(5):
        text = tokenizer.decode(walk(compiler, "regex", r"[0-9]{2,4}-(yes|no)", seed))
        assert re.fullmatch(r"[0-9]{2,4}-(yes|no)", text), text


def test_the_draft_row_masks_after_the_draft_and_leaves_the_matcher_as_it_was(compiler):
    grammar = compiler.grammar("regex", "ab")
    before = grammar.allowed()
    (a,) = [t for t in np.flatnonzero(before) if t != EOS][:1]
    after_draft = grammar.allowed(int(a))
    assert not np.array_equal(before, after_draft)
    assert np.array_equal(grammar.allowed(), before)  # rolled back
    mask = banned([grammar, None], [None, None], torch.device("cpu"))
    assert mask.shape == (2, compiler.vocab_size) and mask[0].any() and not mask[1].any()


def test_copies_follow_their_own_sample(compiler):
    grammar = compiler.grammar("regex", "(x|y)z")
    other = grammar.copy()
    first = next(t for t in np.flatnonzero(grammar.allowed()) if t != EOS)
    grammar.advance([int(first)])
    assert not np.array_equal(grammar.allowed(), other.allowed())


@pytest.mark.parametrize(("kind", "text", "field"), [("regex", "(", "regex"), ("json_schema", "{", "json_schema")])
def test_a_constraint_that_does_not_compile_names_its_field(compiler, kind, text, field):
    with pytest.raises(InvalidRequest) as e:
        compiler.grammar(kind, text)
    assert f"sampling_params.{field}" in str(e.value)
