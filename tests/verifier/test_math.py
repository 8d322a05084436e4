"""Math answers: the labelled set gives exactly plain math-verify's verdicts, and the shortcuts are exact."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import sympy
from math_verify import parse

from services.verifier.domain import Verdict
from services.verifier.extract import answer_region
from services.verifier.math_check import GOLD_CONFIG, PRED_CONFIG, MathChecker, gold_text, plain_correct
from services.verifier.math_fast import boxed_snippet, quick_parse
from services.verifier.pool import MathPool, PoolSettings

PAIRS = [json.loads(line) for line in (Path(__file__).parent / "data" / "math_pairs.jsonl").read_text().splitlines()]
SUM_3000 = "\\boxed{" + "+".join(str(i) for i in range(3000)) + "}"
TOWER = "$\\boxed{9^{9^{9^{9}}}}$"


def test_the_labelled_set_covers_the_answer_kinds() -> None:
    kinds = Counter(p["category"] for p in PAIRS)
    assert len(PAIRS) >= 500
    for kind in (
        "fraction",
        "surd",
        "set",
        "interval",
        "matrix",
        "unit",
        "percent",
        "equation",
        "no_answer",
        "unboxed",
    ):
        assert kinds[kind] >= 5, kind
    assert sum(not p["label"] for p in PAIRS) >= 150  # wrong answers and missing ones


async def test_the_pool_gives_exactly_plain_math_verify_verdicts_on_the_labelled_set() -> None:
    pool = MathPool(PoolSettings(num_processes=2))
    pool.start()
    try:
        outcomes = await asyncio.gather(*(pool.check(p["response"], tuple(p["references"])) for p in PAIRS))
    finally:
        await pool.close()
    # `plain` is plain math-verify's verdict with the same settings (recomputed by the slow test below).
    assert [p["id"] for p, got in zip(PAIRS, outcomes, strict=True) if got.correct != p["plain"]] == []
    # The labels are what a person would say; under the reward settings math-verify agrees with all of them.
    assert [p["id"] for p in PAIRS if p["plain"] != p["label"]] == []
    verdicts = Counter(o.verdict for o in outcomes)
    assert verdicts[Verdict.NO_ANSWER] >= 10 and verdicts[Verdict.CORRECT] >= 300


@pytest.mark.slow
def test_the_stored_verdicts_are_plain_math_verifys() -> None:
    assert [p["id"] for p in PAIRS if plain_correct(p["response"], p["references"]) != p["plain"]] == []


def _random_contents(rng: random.Random, with_decimals: bool) -> list[str]:
    out = [str(rng.randint(-(10**k), 10**k)) for k in range(1, 40) for _ in range(3)] + ["007", "-0", "0"]
    out += [f"{rng.choice(['', '-'])}\\frac{{{rng.randint(-50, 10**6)}}}{{{rng.randint(1, 10**6)}}}" for _ in range(80)]
    out += ["\\frac{0}{5}", "\\frac{4}{2}", "-\\frac{-3}{4}"]
    if with_decimals:
        out += [f"{rng.randint(-999, 999)}.{rng.randint(0, 9999999):0{rng.randint(1, 7)}d}" for _ in range(80)]
    return out


@pytest.mark.parametrize("is_gold", [False, True])
def test_quick_parse_is_exactly_math_verifys_parse(is_gold: bool) -> None:
    rng = random.Random(7)
    config = GOLD_CONFIG if is_gold else PRED_CONFIG
    for content in _random_contents(rng, with_decimals=not is_gold):
        snippet = gold_text(content) if is_gold else f"\\boxed{{{content}}}"
        quick, full = quick_parse(snippet, is_gold=is_gold), parse(snippet, list(config))
        assert quick is not None, content
        assert [sympy.srepr(quick[0]), quick[1]] == [sympy.srepr(full[0]), full[1]], content
    assert quick_parse("\\boxed{0.5}", is_gold=True) is None  # references rewrite decimals to fractions
    assert quick_parse("\\boxed{x+1}") is None


TWO_STAGE_CHECK = """
import json, sys
import sympy
from latex2sympy2_extended.latex2sympy2 import latex2sympy
from services.verifier.math_fast import use_two_stage_parsing

def trees(texts):
    out = []
    for t in texts:
        try:
            out.append(sympy.srepr(latex2sympy(t)))
        except Exception as e:
            out.append("error " + type(e).__name__)
    return out

texts = json.loads(sys.stdin.read())
ll = trees(texts)
use_two_stage_parsing()
print(json.dumps([t for t, a, b in zip(texts, ll, trees(texts)) if a != b]))
"""


@pytest.mark.slow
def test_two_stage_parsing_gives_the_same_trees() -> None:
    # Every reference and every boxed answer of the labelled set, parsed plainly (LL) and two-stage.
    texts = sorted(
        {r for p in PAIRS for r in p["references"]} | {s[7:-1] for p in PAIRS if (s := boxed_snippet(p["response"]))}
    )
    done = subprocess.run(
        [sys.executable, "-c", TWO_STAGE_CHECK],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(done.stdout) == []
    assert len(texts) > 250


def test_boxed_snippet_only_when_it_cannot_change_math_verifys_answer() -> None:
    assert boxed_snippet("So the answer is $\\boxed{\\frac{1}{2}}$.") == "\\boxed{\\frac{1}{2}}"
    assert boxed_snippet("$\\boxed{1}$ and $\\boxed{2}$") is None  # math-verify joins them into a set
    assert boxed_snippet("The rate is $\\boxed{10}$\\%.") is None  # a percent after the box changes the value
    assert boxed_snippet("The final answer is $\\boxed{7}$. I hope it is correct.") is None
    assert boxed_snippet("\\fbox{3} or $\\boxed{3}$") is None
    assert boxed_snippet("\\boxed{3") is None and boxed_snippet("\\boxed 3") is None


def test_the_answer_is_read_after_the_think_block() -> None:
    assert answer_region("<think>\\boxed{1}</think>The answer is $\\boxed{2}$") == "The answer is $\\boxed{2}$"
    assert answer_region("<think>never finished \\boxed{1}") == ""
    assert answer_region("no think block \\boxed{3}") == "no think block \\boxed{3}"


def test_verdicts_and_reasons_a_person_can_read() -> None:
    checker = MathChecker()
    right = checker.check("<think>x</think>So $\\boxed{\\dfrac{2}{4}}$.", ["0.5"])
    assert (right.correct, right.verdict) == (True, Verdict.CORRECT) and "matches the reference" in right.reason
    wrong = checker.check("$\\boxed{3}$", ["4", "5"])
    assert (wrong.verdict, wrong.answer) == (Verdict.INCORRECT, "3") and "none of 2" in wrong.reason
    unfinished = checker.check("<think>\\boxed{4}", ["4"])
    assert unfinished.verdict == Verdict.NO_ANSWER and "never closed" in unfinished.reason
    assert checker.check("I do not know.", ["4"]).verdict == Verdict.NO_ANSWER


def test_timeouts_are_reported_and_inputs_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    checker = MathChecker(parse_timeout_s=1, verify_timeout_s=1)
    caplog.set_level(logging.DEBUG)
    start = time.monotonic()
    outcome = checker.check(TOWER, ["1"])
    assert outcome.verdict == Verdict.TIMEOUT and not outcome.correct
    assert time.monotonic() - start < 4.0
    assert not checker.check(SUM_3000, ["0"]).correct  # slow to parse: math-verify logs the whole input
    assert all(len(r.getMessage()) < 300 and "+2999" not in str(r.__dict__) for r in caplog.records)
    assert checker.check("$\\boxed{2}$", ["2"]).correct  # the checker still works afterwards
