"""The reasoning split, whole and streamed in every chunking."""

import random

import pytest

from services.text.reasoning import ReasoningSplitter

CASES = [
    ("<think>\nadd 2 and 3\n</think>\nThe answer is \\boxed{5}.", "add 2 and 3", "The answer is \\boxed{5}."),
    ("<think>a</think>b", "a", "b"),
    ("no think block at all", "", "no think block at all"),
    ("<think>\nunfinished reasoning", "unfinished reasoning", ""),
    ("<thin", "", "<thin"),
    ("  <think>\nx < y </thin </think>\n\n\\boxed{1}", "x < y </thin ", "\n\\boxed{1}"),
    ("answer mentions </think> late", "", "answer mentions </think> late"),
]


def split_whole(text: str) -> tuple[str, str]:
    s = ReasoningSplitter()
    r, a = s.feed(text)
    r2, a2 = s.finish()
    return r + r2, a + a2


@pytest.mark.parametrize("text,reasoning,answer", CASES)
def test_whole_text_split(text, reasoning, answer):
    assert split_whole(text) == (reasoning, answer)


@pytest.mark.parametrize("text,reasoning,answer", CASES)
def test_streamed_split_equals_whole_for_every_chunking(text, reasoning, answer):
    rng = random.Random(0)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(1, 6))))
        pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        s = ReasoningSplitter()
        got_r = got_a = ""
        for piece in pieces:
            r, a = s.feed(piece)
            got_r, got_a = got_r + r, got_a + a
        r, a = s.finish()
        assert (got_r + r, got_a + a) == (reasoning, answer), pieces
