"""Math answers: the text after </think>, its final \\boxed{}, and math-verify with its reward settings.

Runs inside the math pool's worker processes, on their main thread: math-verify's timeouts use
SIGALRM and take whole seconds only. `plain_correct` is plain math-verify with the same
settings (the baseline the service must agree with); `MathChecker` gives the same verdicts
faster: parsed references are cached, the \\boxed{} answer is cut out before parsing when
that provably cannot change math-verify's result, and repeated answers hit a cache.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from latex2sympy2_extended import NormalizationConfig
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from math_verify.errors import TimeoutException

from services.verifier.domain import Verdict
from services.verifier.extract import answer_region
from services.verifier.math_fast import boxed_snippet, quick_parse, widen_latex_cache

log = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 200  # extracted answers are reported capped
PARSE_TIMEOUT_S = 5
VERIFY_TIMEOUT_S = 5

# math-verify's README, "for rewards": boxed first, only valid LaTeX (no malformed-operator or
# nit fixes), units stripped, every \boxed{} considered; plain expressions as a fallback.
PRED_CONFIG = (
    LatexExtractionConfig(
        boxed_match_priority=0,
        normalization_config=NormalizationConfig(
            basic_latex=True, units=True, malformed_operators=False, nits=False, boxed="all", equations=False
        ),
    ),
    ExprExtractionConfig(),
)
GOLD_CONFIG = (LatexExtractionConfig(),)


def gold_text(reference: str) -> str:
    """A reference as math-verify's LaTeX extraction expects it: inside \\boxed{} unless already in math mode."""
    ref = reference.strip()
    return ref if "\\boxed" in ref or "$" in ref else "\\boxed{" + ref + "}"


def plain_correct(response: str, references: list[str] | tuple[str, ...]) -> bool:
    """Plain math-verify with the service's settings: parse every reference and the answer, then verify."""
    pred = parse(answer_region(response), list(PRED_CONFIG), parsing_timeout=PARSE_TIMEOUT_S)
    return any(
        verify(
            parse(gold_text(r), list(GOLD_CONFIG), parsing_timeout=PARSE_TIMEOUT_S),
            pred,
            timeout_seconds=VERIFY_TIMEOUT_S,
        )
        for r in references
    )


def digest(text: str) -> str:
    """A short name for an input in logs (never the input itself: it may be pathological)."""
    return f"{len(text)} chars, sha1 {hashlib.sha1(text.encode('utf-8', 'replace')).hexdigest()[:12]}"


class _TimeoutFlag(logging.Handler):
    """Swallows math-verify's log records (they embed whole inputs) and notes its timeouts."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("Timeout"):
            self.count += 1


@dataclass(frozen=True, slots=True)
class MathOutcome:
    """What the worker found: correctness, a verdict, the answer it read, and time spent."""

    correct: bool
    verdict: Verdict
    answer: str
    reason: str
    elapsed_s: float


class _Lru(OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


def _has_value(parsed: list[Any]) -> bool:
    return bool(parsed) and not isinstance(parsed[0], str)


def _answer_text(parsed: list[Any]) -> str:
    text = parsed[-1] if parsed and isinstance(parsed[-1], str) else ""
    return text if len(text) <= MAX_ANSWER_CHARS else text[:MAX_ANSWER_CHARS] + "…"


class MathChecker:
    """math-verify with caches; one per worker process, called on its main thread."""

    def __init__(self, parse_timeout_s: int = PARSE_TIMEOUT_S, verify_timeout_s: int = VERIFY_TIMEOUT_S) -> None:
        self.parse_timeout_s = int(parse_timeout_s)
        self.verify_timeout_s = int(verify_timeout_s)
        self._golds: _Lru = _Lru(4096)
        self._preds: _Lru = _Lru(4096)
        self._verdicts: _Lru = _Lru(16384)
        self._flag = _TimeoutFlag()
        widen_latex_cache()
        for name in ("math_verify", "latex2sympy2_extended"):
            logger = logging.getLogger(name)
            logger.handlers[:] = [self._flag]
            logger.propagate = False
            logger.setLevel(logging.WARNING)

    def _parse(self, text: str, config: tuple[Any, ...]) -> list[Any]:
        return parse(text, list(config), parsing_timeout=self.parse_timeout_s)

    def _gold(self, reference: str) -> list[Any]:
        gold = self._golds.get(reference)
        if gold is None:
            before = self._flag.count
            text = gold_text(reference)
            gold = quick_parse(text, is_gold=True) or self._parse(text, GOLD_CONFIG)
            if self._flag.count == before:
                self._golds.put(reference, gold)
        return gold

    def _pred(self, region: str) -> tuple[str, list[Any]]:
        """The cache key of the answer and math-verify's parse of it."""
        before = self._flag.count
        snippet = boxed_snippet(region)
        if snippet is not None:
            pred = self._preds.get(snippet)
            if pred is None:
                pred = quick_parse(snippet) or self._parse(snippet, PRED_CONFIG)
                if _has_value(pred) and self._flag.count == before:
                    self._preds.put(snippet, pred)
            if _has_value(pred):
                return snippet, pred
        pred = self._preds.get(region)
        if pred is None:
            pred = self._parse(region, PRED_CONFIG)
            if self._flag.count == before:
                self._preds.put(region, pred)
        return region, pred

    def _matches(self, reference: str, key: str, pred: list[Any]) -> bool:
        cached = self._verdicts.get((reference, key))
        if cached is not None:
            return bool(cached)
        gold = self._gold(reference)
        before = self._flag.count
        ok = verify(gold, pred, timeout_seconds=self.verify_timeout_s)
        if self._flag.count == before:
            self._verdicts.put((reference, key), ok)
        return ok

    def check(self, response: str, references: list[str] | tuple[str, ...]) -> MathOutcome:
        """The verdict for one response; never raises (a failure is an ERROR outcome)."""
        start = time.perf_counter()
        try:
            outcome = self._check(response, references)
        except MemoryError:
            log.warning("math check ran out of memory", extra={"input": digest(response)})
            outcome = (False, Verdict.ERROR, "", "the checker ran out of memory on this answer")
        except (Exception, TimeoutException) as e:  # TimeoutException is a BaseException
            log.warning("math check failed", extra={"input": digest(response), "error": type(e).__name__})
            outcome = (False, Verdict.ERROR, "", f"the checker failed ({type(e).__name__})")
        correct, verdict, answer, reason = outcome
        return MathOutcome(correct, verdict, answer, reason, time.perf_counter() - start)

    def _check(self, response: str, references: list[str] | tuple[str, ...]) -> tuple[bool, Verdict, str, str]:
        timeouts_before = self._flag.count
        region = answer_region(response)
        if not region.strip():
            why = "the <think> block never closed" if "<think>" in response else "the response is empty"
            return False, Verdict.NO_ANSWER, "", f"no final answer: {why}"
        key, pred = self._pred(region)
        answer = _answer_text(pred)
        timed_out = self._flag.count != timeouts_before
        if not pred:
            if timed_out:
                return (
                    False,
                    Verdict.TIMEOUT,
                    "",
                    f"math-verify timed out ({self.parse_timeout_s} s) reading the answer",
                )
            return False, Verdict.NO_ANSWER, "", "no final answer found after </think>"
        for ref in references:
            if self._matches(ref, key, pred):
                return True, Verdict.CORRECT, answer, f"the answer {answer!r} matches the reference {ref!r}"
        if timed_out or self._flag.count != timeouts_before:
            return False, Verdict.TIMEOUT, answer, "math-verify timed out comparing the answer; counted as wrong"
        if not any(self._gold(r) for r in references):
            return False, Verdict.ERROR, answer, "no reference answer could be parsed"
        return False, Verdict.INCORRECT, answer, f"the answer {answer!r} matches none of {len(references)} reference(s)"
