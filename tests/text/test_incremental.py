"""Incremental detokenization: every prefix equals whole decoding; stop strings trimmed, also across tokens."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.text.artifacts import LoadedTokenizer
from services.text.incremental import (
    IncrementalDetokenizer,
    StopStringMatcher,
    TokenTextDecoder,
    detokenize_stream,
)
from tests.support.tokenizer_dirs import CORPUS

STREAM = "\n".join(CORPUS)


def test_corpus_really_splits_characters_across_tokens(loaded: LoadedTokenizer):
    """The tests below mean something only if some tokens hold part of a character."""
    ids = loaded.tokenizer.encode(STREAM).ids
    assert any(loaded.tokenizer.decode([i]).endswith("\ufffd") for i in ids)


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_every_prefix_equals_whole_sequence_decoding(loaded: LoadedTokenizer, skip_special_tokens):
    tok = loaded.tokenizer
    ids = tok.encode(STREAM).ids
    decoder = TokenTextDecoder(tok, skip_special_tokens)
    emitted = ""
    for k, token_id in enumerate(ids, start=1):
        emitted += decoder.push([token_id])
        assert "\ufffd" not in emitted  # a half character is never shown
        assert emitted + decoder.pending() == tok.decode(ids[:k], skip_special_tokens=skip_special_tokens)
    emitted += decoder.finish()
    assert emitted == tok.decode(ids, skip_special_tokens=skip_special_tokens)


def test_each_prefix_finished_by_a_fresh_detokenizer(loaded: LoadedTokenizer):
    """A stream cut anywhere (length limit, abort) ends with exactly the whole-sequence text, U+FFFD included."""
    tok = loaded.tokenizer
    ids = tok.encode(CORPUS[1] + CORPUS[2]).ids  # Chinese and emoji: the splits that matter
    for k in range(len(ids) + 1):
        text, stop = detokenize_stream(tok, ids[:k])
        assert (text, stop) == (tok.decode(ids[:k]), None)


def stream_with_stop(loaded: LoadedTokenizer, text: str, stop: list[str], **options) -> tuple[list[str], str | None]:
    detok = IncrementalDetokenizer(loaded.tokenizer, stop=stop, **options)
    deltas = []
    for token_id in loaded.tokenizer.encode(text).ids:
        delta = detok.push(token_id)
        deltas.append(delta.text)
        if delta.stop is not None:
            break
    deltas.append(detok.finish().text)
    assert "".join(deltas) == detok.text
    return deltas, detok.stop


def test_stop_string_split_across_tokens_is_trimmed(loaded: LoadedTokenizer):
    tok = loaded.tokenizer
    text = "The answer is 42.</answer> and then more text"
    ids = tok.encode(text).ids
    start, end = text.index("</answer>"), text.index("</answer>") + len("</answer>")
    assert any(start < len(tok.decode(ids[:k])) < end for k in range(len(ids))), "a token boundary is inside the stop"
    deltas, stop = stream_with_stop(loaded, text, ["</answer>"])
    assert (("".join(deltas)), stop) == ("The answer is 42.", "</answer>")
    assert not any("<" in d for d in deltas)  # the start of the stop string was held back, never shown


def test_stop_string_of_split_multibyte_characters(loaded: LoadedTokenizer):
    text = "前言。你好，世界！后面的文字"
    deltas, stop = stream_with_stop(loaded, text, ["世界"])
    assert ("".join(deltas), stop) == ("前言。你好，", "世界")
    assert all("\ufffd" not in d for d in deltas)


def test_earliest_of_several_stops_wins_and_include_stop_keeps_it(loaded: LoadedTokenizer):
    text = "alpha beta gamma delta"
    deltas, stop = stream_with_stop(loaded, text, ["delta", "beta"])
    assert ("".join(deltas), stop) == ("alpha ", "beta")
    deltas, stop = stream_with_stop(loaded, text, ["gamma"], include_stop=True)
    assert ("".join(deltas), stop) == ("alpha beta gamma", "gamma")


def test_text_that_only_looks_like_a_stop_start_is_released(loaded: LoadedTokenizer):
    text = "x </ans but not the end"
    deltas, stop = stream_with_stop(loaded, text, ["</answer>"])
    assert ("".join(deltas), stop) == (text, None)
    deltas, stop = stream_with_stop(loaded, "ends with </ans", ["</answer>"])
    assert ("".join(deltas), stop) == ("ends with </ans", None)  # released by finish


def test_tokens_after_the_stop_are_ignored(loaded: LoadedTokenizer):
    detok = IncrementalDetokenizer(loaded.tokenizer, stop=["STOP"])
    deltas = [detok.push(i) for i in loaded.tokenizer.encode("go STOP more words here").ids]
    assert detok.is_stopped and detok.stop == "STOP" and detok.text == "go "
    assert [d.stop for d in deltas].count("STOP") == 1
    assert detok.push(5).text == "" and detok.finish().text == ""


def test_special_tokens_are_skipped_or_kept(loaded: LoadedTokenizer):
    ids = loaded.tokenizer.encode("<|im_start|>assistant\nhi<|im_end|>").ids
    assert detokenize_stream(loaded.tokenizer, ids)[0] == "assistant\nhi"
    kept = detokenize_stream(loaded.tokenizer, ids, skip_special_tokens=False, stop=["<|im_end|>"])
    assert kept == ("<|im_start|>assistant\nhi", "<|im_end|>")


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet="ab</>x", max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=10),
    stops=st.lists(st.text(alphabet="ab</>x", min_size=1, max_size=5), min_size=1, max_size=3),
)
def test_stop_matcher_equals_cutting_the_whole_text(text: str, cuts: list[int], stops: list[str]):
    """The stream stops at the first piece that completes a stop string, cut where the earliest one starts."""
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    matcher = StopStringMatcher(stops)
    out, matched = "", None
    for a, b in itertools.pairwise(bounds):
        delta = matcher.feed(text[a:b])
        out += delta.text
        matched = matched or delta.stop
    out += matcher.finish().text
    seen = next((text[:b] for b in bounds if any(s in text[:b] for s in stops)), text)
    hits = [(seen.find(s), i, s) for i, s in enumerate(stops) if s in seen]
    if hits:
        pos, _, first = min(hits)
        assert (out, matched) == (text[:pos], first)
    else:
        assert (out, matched) == (text, None)
