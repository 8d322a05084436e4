"""Exact shortcuts around math-verify: each gives math-verify's own result, only cheaper.

- `boxed_snippet`: parse only the final \\boxed{} when that provably cannot change the answer found;
- `quick_parse`: integers, fractions and decimals without the LaTeX parser (results identical);
- `widen_latex_cache`: a larger memo for the pure LaTeX→sympy conversion;
- `use_two_stage_parsing`: ANTLR's SLL-then-LL strategy, documented to give the same parse trees.
Each is checked against plain math-verify in tests/verifier/test_math.py and on the labelled set.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import math_verify.parser as mv_parser
import sympy

_PERCENT_AFTER = re.compile(r"%|[Pp]ercent|[Pp]ct")
_INTEGER = re.compile(r"-?\d{1,60}")
_DECIMAL = re.compile(r"-?\d{1,7}\.\d{1,7}")
_FRACTION = re.compile(r"(-?)\\frac\{(-?\d{1,30})\}\{([1-9]\d{0,29})\}")


def matching_brace(text: str, open_at: int) -> int | None:
    """Index of the `}` closing the `{` at `open_at`, or None when unbalanced."""
    depth = 0
    for i in range(open_at, len(text)):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def boxed_snippet(region: str) -> str | None:
    """`\\boxed{...}` of the region's only boxed answer, when parsing it alone must give parse(region)'s result.

    With boxed_match_priority=0, math-verify's first priority group holds only boxed matches and
    "final answer is ... I hope" matches; with a single `\\boxed{` (no `\\fbox`, no "I hope") every
    match in that group normalises to the same boxed content, unless a percent sign follows it (the
    math-environment pattern then converts to a percentage). When the content fails to parse,
    math-verify tries other matches, so the caller falls back to the full parse.
    """
    if "I hope" in region or "\\fbox" in region:
        return None
    start = region.find("\\boxed")
    if start < 0 or region.find("\\boxed", start + 6) >= 0 or region[start + 6 : start + 7] != "{":
        return None
    end = matching_brace(region, start + 6)
    if end is None or _PERCENT_AFTER.search(region, end + 1):
        return None
    return region[start : end + 1]


def quick_parse(snippet: str, *, is_gold: bool = False) -> list[Any] | None:
    """math-verify's parse of `\\boxed{n}`, `\\boxed{\\frac{p}{q}}` or (answers) `\\boxed{d.ddd}`, without ANTLR.

    For these contents the normalisation is the identity and latex2sympy yields exactly
    Integer(n), Rational(p, q) and Float(text) (checked in tests/verifier/test_math.py), so the
    result equals parse(snippet, PRED_CONFIG or GOLD_CONFIG); anything else returns None.
    References keep decimals on the slow path: their normalisation rewrites 0.5 as \\frac{1}{2}.
    """
    if not (snippet.startswith("\\boxed{") and snippet.endswith("}")):
        return None
    content = snippet[7:-1]
    if _INTEGER.fullmatch(content):
        return [sympy.Integer(int(content)), content]
    if not is_gold and _DECIMAL.fullmatch(content):
        return [sympy.Float(content), content]
    m = _FRACTION.fullmatch(content)
    if m:
        sign = -1 if m.group(1) else 1
        return [sympy.Rational(sign * int(m.group(2)), int(m.group(3))), content]
    return None


def widen_latex_cache(size: int = 4096) -> None:
    """Grow math-verify's LaTeX→sympy memo (an lru_cache of 20): a worker sees many prompts' answers.

    The memoised function is pure (a timed-out call raises and is not cached), so verdicts are unchanged.
    """
    fn = mv_parser.parse_latex_cached
    info = getattr(fn, "cache_info", None)
    if info is not None and (info().maxsize or 0) < size:
        mv_parser.parse_latex_cached = functools.lru_cache(maxsize=size)(fn.__wrapped__)  # type: ignore[attr-defined]
    else:
        fn.cache_clear()  # a new checker starts cold


def use_two_stage_parsing() -> None:
    """Parse LaTeX with ANTLR's two-stage strategy: fast SLL prediction first, full LL only on an error.

    ANTLR documents that an SLL parse either reports a syntax error or returns exactly the tree LL
    would return, so trees (and verdicts) are unchanged; most answers never need LL's costly
    full-context prediction. latex2sympy raises on every syntax error, which is the bail-out signal.
    Process-wide: call it in the math workers only.
    """
    from antlr4.atn.PredictionMode import PredictionMode
    from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy

    create = _Latex2Sympy.create_parser
    if getattr(create, "is_two_stage", False):
        return

    def create_parser(self: Any, latex_str: str) -> Any:
        parser = create(self, latex_str)
        parse_ll = parser.math

        def math() -> Any:
            parser._interp.predictionMode = PredictionMode.SLL
            try:
                return parse_ll()
            except Exception:
                parser.reset()
                parser._interp.predictionMode = PredictionMode.LL
                return parse_ll()

        parser.math = math
        return parser

    create_parser.is_two_stage = True  # type: ignore[attr-defined]
    _Latex2Sympy.create_parser = create_parser  # type: ignore[method-assign]
