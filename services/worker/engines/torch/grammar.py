"""Structured outputs for the torch engine: JSON Schema, regex and EBNF constraints enforced with llguidance.

llguidance (not xgrammar) because it installs as one self-contained wheel: xgrammar pulls in triton, which on this
project's CPU machines would turn on the engine's GPU-kernel detection for nothing, and transformers' tokenizer
classes, where llguidance reads the `tokenizers` JSON the engine already holds.

A `Grammar` follows one sample: `mask` gives the tokens allowed next (optionally after one speculative draft token,
for MTP's second verify row), `advance` consumes the tokens the engine kept. When the grammar is complete the only
token it allows is EOS, so the sample stops there like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

import llguidance
import numpy as np
import torch
from tokenizers import Tokenizer

from services.worker.engine_api import InvalidRequest

KINDS = ("json_schema", "regex", "ebnf")


class GrammarCompiler:
    """One llguidance tokenizer per engine (building it takes a while); a matcher per constrained sample."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int, eos_token_ids: Sequence[int]) -> None:
        self.vocab_size = vocab_size
        self._eos = tuple(eos_token_ids)
        self._tokenizer = llguidance.LLTokenizer(tokenizer.to_str(), n_vocab=vocab_size, eos_token=list(eos_token_ids))

    def grammar(self, kind: str, text: str) -> Grammar:
        """Raises InvalidRequest naming the constraint when it does not compile."""
        field = f"sampling_params.{'ebnf_grammar' if kind == 'ebnf' else kind}"
        try:
            if kind == "json_schema":
                spec = llguidance.LLMatcher.grammar_from_json_schema(text, defaults={"whitespace_flexible": False})
            else:
                spec = llguidance.grammar_from("gbnf" if kind == "ebnf" else "regex", text)
        except ValueError as e:
            raise InvalidRequest(field, f"cannot compile: {e}") from None
        error = llguidance.LLMatcher.validate_grammar(spec, self._tokenizer)
        if error:
            raise InvalidRequest(field, f"cannot compile: {error}")
        matcher = llguidance.LLMatcher(self._tokenizer, spec, log_level=0)
        if matcher.is_error():
            raise InvalidRequest(field, f"cannot compile: {matcher.get_error()}")
        return Grammar(matcher, self.vocab_size, self._eos)


class Grammar:
    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int, eos: tuple[int, ...]) -> None:
        self._matcher = matcher
        self._vocab_size = vocab_size
        self._eos = eos

    def copy(self) -> Grammar:
        """A fresh matcher in the same state (each of a request's n samples needs its own)."""
        return Grammar(self._matcher.deep_copy(), self._vocab_size, self._eos)

    def _allowed(self) -> np.ndarray:
        words = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)
        allowed = np.unpackbits(words, bitorder="little")[: self._vocab_size].astype(bool)
        if not allowed.any():  # the matcher failed (is_error): end the sample rather than sample from nothing
            allowed[list(self._eos)] = True
        return allowed

    def allowed(self, draft: int | None = None) -> np.ndarray:
        """[V] bool: the tokens the grammar allows next (after `draft`, if given)."""
        if draft is None:
            return self._allowed()
        if not self._matcher.try_consume_tokens([draft]):  # the draft is banned in row 0, so this row goes unused
            return np.ones(self._vocab_size, dtype=bool)
        try:
            return self._allowed()
        finally:
            self._matcher.rollback(1)

    def advance(self, tokens: Sequence[int]) -> None:
        if tokens and not self._matcher.is_stopped():
            self._matcher.consume_tokens(list(tokens))

    @property
    def error(self) -> str | None:
        return self._matcher.get_error() if self._matcher.is_error() else None


def banned(grammars: Sequence[Grammar | None], drafts: Sequence[int | None], device: torch.device) -> torch.Tensor:
    """[R, V] bool, True where a row's grammar forbids the token (rows without a grammar ban nothing)."""
    vocab = next(g for g in grammars if g is not None)._vocab_size
    rows = [np.zeros(vocab, dtype=bool) if g is None else ~g.allowed(d) for g, d in zip(grammars, drafts, strict=True)]
    return torch.from_numpy(np.stack(rows)).to(device)
