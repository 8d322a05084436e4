"""Regenerate math_pairs.jsonl: labelled (response, references) pairs for the math verifier.

Run `.venv/bin/python tests/verifier/data/make_math_pairs.py > tests/verifier/data/math_pairs.jsonl`.
Each line: {"id", "category", "references", "response", "label", "plain"}; `label` is what a
person would say (is the final answer right?) and `plain` is plain math-verify's verdict with
the service's settings (services.verifier.math_check.plain_correct, math-verify 0.9.0). The
verifier's contract is to give exactly `plain`; the label documents intent and catches a
degenerate set. Seeded, so the file is reproducible.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator

from services.verifier.math_check import plain_correct

THINK = [
    "Let me work through this carefully. First I set up the equation and simplify both sides.",
    "We need to be careful with signs here. Expanding gives a quadratic; its discriminant is positive.",
    "Try small cases: n=1 gives 3, n=2 gives 7, so the pattern suggests something. Maybe \\boxed{7}? No, check again.",
    "Using the formula $a^2 + b^2 = c^2$ with $a = 3$ and $b = 4$ we get $c = 5$, but that is only a sub-step.",
    "Hmm, wait. Let me recompute: $\\frac{6}{8} = \\frac{3}{4}$. Then multiply by 2.",
]
LEAD = [
    "",
    "We simplify step by step and check the result by substitution.\n\n",
    "**Solution.** Combining the two cases gives the result below.\n\n",
    "Putting everything together, we have verified each condition.\n",
]
# How the final answer is written; {a} is the answer's LaTeX.
BOXED = [
    "Therefore, the answer is $\\boxed{{{a}}}$.",
    "The final answer is \\boxed{{{a}}}.",
    "\\[\n\\boxed{{{a}}}\n\\]",
    "So we get $\\boxed{{{a}}}$",
    "**Answer:** $\\boxed{{{a}}}$",
    "Hence the result is \\(\\boxed{{{a}}}\\).",
]


def response(answer: str, rng: random.Random, *, think: bool | None = None, boxed: bool = True) -> str:
    """A model-shaped response whose final answer is `answer`."""
    think = rng.random() < 0.7 if think is None else think
    head = f"<think>\n{rng.choice(THINK)}\n</think>\n\n" if think else ""
    tail = rng.choice(BOXED).format(a=answer) if boxed else f"The answer is {answer}."
    return head + rng.choice(LEAD) + tail


def fractions(rng: random.Random) -> Iterator[tuple[str, list[str], str, bool]]:
    for _ in range(22):
        q = rng.randint(2, 30)
        p = rng.choice([i for i in range(1, 4 * q) if __import__("math").gcd(i, q) == 1 and i % q])
        k = rng.randint(2, 5)
        gold = f"\\frac{{{p}}}{{{q}}}"
        yield "fraction", [gold], response(gold, rng), True
        yield (
            "fraction",
            [gold],
            response(rng.choice([f"\\dfrac{{{p}}}{{{q}}}", f"{p}/{q}", f"\\tfrac{{{p}}}{{{q}}}"]), rng),
            True,
        )
        yield "fraction", [gold], response(f"\\frac{{{k * p}}}{{{k * q}}}", rng), True
        yield "fraction", [gold], response(f"\\frac{{{p + 1}}}{{{q}}}", rng), False
    for p, q, dec in [(1, 4, "0.25"), (3, 8, "0.375"), (1, 2, "0.5"), (7, 20, "0.35"), (5, 16, "0.3125")]:
        yield "fraction", [f"\\frac{{{p}}}{{{q}}}"], response(dec, rng), True
    yield "fraction", ["\\frac{1}{3}"], response("0.3333", rng), False  # six-place rounding: not equal
    yield "fraction", ["\\frac{1}{3}"], response("0.333333333", rng), True
    # The reward settings refuse malformed LaTeX (malformed_operators=False): a bare \dfrac37 is not read.
    yield "fraction", ["\\frac{3}{7}"], response("\\dfrac37", rng), False
    yield "fraction", ["\\frac{1}{2}", "0.5"], response("\\frac{2}{4}", rng), True


def integers(rng: random.Random) -> Iterator[tuple[str, list[str], str, bool]]:
    for _ in range(26):
        n = rng.randint(-50, 5000)
        yield "integer", [str(n)], response(str(n), rng), True
        yield "integer", [str(n)], response(rng.choice([f"{n}.0", f"{n} "]), rng), True
        yield "integer", [str(n)], response(str(n + rng.choice([-2, -1, 1, 10])), rng), False
    yield "integer", ["1000"], response("1,000", rng), True
    yield "integer", ["1000000"], response("10^6", rng), True
    yield "integer", ["120"], response("5!", rng), True
    yield "integer", ["12"], response("\\boxed{12}. Actually no, it is \\boxed{13}", rng, boxed=False), False


def surds(rng: random.Random) -> Iterator[tuple[str, list[str], str, bool]]:
    cases = [
        ("2\\sqrt{3}", ["\\sqrt{12}", "2 \\cdot \\sqrt{3}"], ["3\\sqrt{2}", "\\sqrt{6}", "2\\sqrt3"]),
        ("\\frac{\\sqrt{2}}{2}", ["\\frac{1}{\\sqrt{2}}"], ["\\sqrt{2}", "\\frac{\\sqrt2}{2}"]),
        ("3\\sqrt{5}", ["\\sqrt{45}"], ["5\\sqrt{3}"]),
        ("1+\\sqrt{2}", ["\\sqrt{2}+1", "\\frac{1}{\\sqrt{2}-1}"], ["1-\\sqrt{2}"]),
        ("\\sqrt[3]{2}", ["2^{1/3}", "2^{\\frac{1}{3}}"], ["\\sqrt{2}"]),
        ("4\\sqrt{2}", ["\\sqrt{32}", "2\\sqrt{8}"], ["2\\sqrt{2}"]),
        ("\\frac{1+\\sqrt{5}}{2}", ["\\frac{\\sqrt{5}+1}{2}"], ["\\frac{1-\\sqrt{5}}{2}"]),
        ("6\\sqrt{6}", ["\\sqrt{216}"], ["6\\sqrt{5}"]),
        ("\\frac{\\pi}{2}", ["\\pi/2", "\\dfrac{\\pi}{2}", "0.5\\pi"], ["\\pi"]),
        ("2\\pi", ["\\pi \\cdot 2"], ["\\pi^2"]),
    ]
    # Bare \sqrt3 / \sqrt2 (no braces) are malformed LaTeX, refused by the reward settings.
    for gold, good, bad in cases:
        yield "surd", [gold], response(gold, rng), True
        for g in good:
            yield "surd", [gold], response(g, rng), True
        for b in bad:
            yield "surd", [gold], response(b, rng), False


def sets_intervals(rng: random.Random) -> Iterator[tuple[str, list[str], str, bool]]:
    sets = [
        ("\\{1, 2, 3\\}", ["\\{3, 1, 2\\}", "\\{1,2,3\\}"], ["\\{1, 2\\}", "\\{1, 2, 4\\}"]),
        ("\\{-1, 4\\}", ["\\{4, -1\\}", "-1, 4"], ["\\{1, 4\\}"]),
        ("\\{0\\}", ["\\{0\\}"], ["\\{0, 1\\}"]),
        ("\\{2, 5, 7\\}", ["\\{7, 5, 2\\}"], ["\\{2, 5\\}"]),
    ]
    for gold, good, bad in sets:
        yield "set", [gold], response(gold, rng), True
        for g in good:
            yield "set", [gold], response(g, rng), True
        for b in bad:
            yield "set", [gold], response(b, rng), False
    intervals = [
        ("(1, 2]", ["(1,2]", "\\left(1, 2\\right]"], ["[1, 2]", "(1, 2)"]),
        ("[0, \\infty)", ["[0,\\infty)", "\\left[0, \\infty\\right)"], ["(0, \\infty)"]),
        ("(-\\infty, 3)", ["(-\\infty,3)"], ["(-\\infty, 3]", "(3, \\infty)"]),
        ("[-2, 5]", ["[-2,5]"], ["(-2, 5]"]),
        ("(-\\infty, -1) \\cup (1, \\infty)", ["(-\\infty,-1)\\cup(1,\\infty)"], ["(-1, 1)"]),
        ("(2, 7)", ["(2,7)"], ["[2, 7)"]),
    ]
    for gold, good, bad in intervals:
        yield "interval", [gold], response(gold, rng), True
        for g in good:
            yield "interval", [gold], response(g, rng), True
        for b in bad:
            yield "interval", [gold], response(b, rng), False
    yield "interval", ["1 < x \\le 2"], response("(1, 2]", rng), True  # gold inequality, predicted interval
    yield "interval", ["(1, 2]"], response("1 < x \\le 2", rng), False  # the reverse is refused on purpose


def matrices(rng: random.Random) -> Iterator[tuple[str, list[str], str, bool]]:
    for _ in range(10):
        a, b, c, d = (rng.randint(-9, 9) for _ in range(4))
        gold = f"\\begin{{pmatrix}} {a} & {b} \\\\ {c} & {d} \\end{{pmatrix}}"
        yield "matrix", [gold], response(gold, rng), True
        yield "matrix", [gold], response(f"\\begin{{bmatrix}} {a} & {b} \\\\ {c} & {d} \\end{{bmatrix}}", rng), True
        yield (
            "matrix",
            [gold],
            response(f"\\begin{{pmatrix}} {a} & {b} \\\\ {c} & {d + 1} \\end{{pmatrix}}", rng),
            False,
        )
    for _ in range(4):
        x, y, z = (rng.randint(-9, 9) for _ in range(3))
        gold = f"\\begin{{pmatrix}} {x} \\\\ {y} \\\\ {z} \\end{{pmatrix}}"
        yield "matrix", [gold], response(gold, rng), True
        yield "matrix", [gold], response(f"\\begin{{pmatrix}} {x} \\\\ {y} \\\\ {z + 2} \\end{{pmatrix}}", rng), False


def units_percent(rng: random.Random) -> Iterator[tuple[str, list[str], str, bool]]:
    for _ in range(14):
        n = rng.randint(2, 400)
        unit = rng.choice(["cm", "meters", "km", "inches", "feet", "dollars", "hours", "degrees"])
        yield "unit", [str(n)], response(f"{n} \\text{{ {unit}}}", rng), True
        yield "unit", [str(n)], response(f"{n}\\text{{{unit}}}", rng), True
        yield "unit", [str(n)], response(f"{n + 1} \\text{{ {unit}}}", rng), False
    yield "unit", ["30"], response("30^\\circ", rng), True
    yield "unit", ["12"], response("\\$12", rng), True
    yield "unit", ["5"], response("5\\,\\mathrm{cm}", rng), True
    for _ in range(10):
        p = rng.choice([5, 10, 12.5, 20, 25, 40, 50, 75, 80, 150])
        ps = f"{p:g}"
        yield "percent", [f"{ps}\\%"], response(f"{ps}\\%", rng), True
        yield "percent", [f"{ps}\\%"], response(f"{p / 100:g}", rng), True
        yield "percent", [f"{ps}\\%"], response(f"{p + 5:g}\\%", rng), False
    yield "percent", ["0.2"], response("20\\%", rng), True
    yield "percent", ["25"], response("25\\%", rng), True  # math-verify accepts 25% for 25 (either reading)


def equations(rng: random.Random) -> Iterator[tuple[str, list[str], str, bool]]:
    for _ in range(12):
        n = rng.randint(-20, 20)
        yield "equation", [f"x = {n}"], response(str(n), rng), True
        yield "equation", [str(n)], response(f"x = {n}", rng), True
        yield "equation", [f"x = {n}"], response(f"x = {n + 1}", rng), False
    lines = [
        ("y = 2x + 1", ["y = 1 + 2x", "y=2x+1"], ["y = 2x - 1"]),
        ("y = -\\frac{1}{2}x + 3", ["y = 3 - \\frac{x}{2}"], ["y = \\frac{1}{2}x + 3"]),
        ("x^2 + y^2 = 25", ["y^2 + x^2 = 25"], ["x^2 + y^2 = 5"]),
        ("(x+1)^2", ["x^2+2x+1"], ["x^2+1"]),
        ("x^2 - 4", ["(x-2)(x+2)"], ["(x-2)^2"]),
        ("3a + 2b", ["2b + 3a"], ["3a - 2b"]),
    ]
    for gold, good, bad in lines:
        yield "equation", [gold], response(gold, rng), True
        for g in good:
            yield "equation", [gold], response(g, rng), True
        for b in bad:
            yield "equation", [gold], response(b, rng), False
    yield "equation", ["x = 2, y = 3"], response("x=2, y=3", rng), True


def misc(rng: random.Random) -> Iterator[tuple[str, list[str], str, bool]]:
    yield "complex", ["3 + 4i"], response("4i + 3", rng), True
    yield "complex", ["3 + 4i"], response("3 - 4i", rng), False
    yield "complex", ["-1"], response("e^{i\\pi}", rng), False  # math-verify does not evaluate this one
    yield "text", ["\\text{(A)}"], response("A", rng), True
    yield "text", ["\\text{Yes}"], response("\\text{Yes}", rng), True
    yield "degree", ["\\frac{\\pi}{3}"], response("\\frac{\\pi}{3}", rng), True
    yield "log", ["\\log_2 8"], response("3", rng), True
    yield "log", ["\\ln 2"], response("\\log 2", rng), False  # \log is not read as the natural log
    yield "tuple", ["(1, 2)"], response("(1,2)", rng), True
    yield "tuple", ["(1, 2)"], response("(2, 1)", rng), False
    yield "expr", ["\\frac{x+1}{x-1}"], response("\\frac{1+x}{x-1}", rng), True
    yield "expr", ["2^{10}"], response("1024", rng), True
    yield "expr", ["\\binom{5}{2}"], response("10", rng), True
    yield "expr", ["\\sin^2 x + \\cos^2 x"], response("1", rng), True


def unboxed_and_missing(rng: random.Random) -> Iterator[tuple[str, list[str], str, bool]]:
    for _ in range(16):
        n = rng.randint(1, 999)
        yield "unboxed", [str(n)], response(f"${n}$", rng, boxed=False), True
        yield "unboxed", [str(n)], response(str(n), rng, boxed=False), True
    for _ in range(6):
        n = rng.randint(1, 999)
        yield "unboxed", [str(n)], response(f"${n + 3}$", rng, boxed=False), False
    missing = [
        "I could not finish this problem in time.",
        "<think>\nThis is hard. Let me think about \\boxed{5} maybe.\n",  # think never closed: no answer
        "<think>\nTry \\boxed{42}.\n</think>\n\nI am not sure what the answer is.",  # boxed only inside think
        "The answer is $\\boxed{}$.",
        "",
        "<think>\n</think>\n\nLet us stop here.",
        "Therefore the answer is \\boxed{",
    ]
    for i in range(14):
        yield "no_answer", [str(rng.choice([5, 42, 7]))], missing[i % len(missing)], False


def thinking_traps(rng: random.Random) -> Iterator[tuple[str, list[str], str, bool]]:
    for _ in range(8):
        n = rng.randint(2, 99)
        wrong = n + 1
        text = f"<think>\nFirst guess \\boxed{{{wrong}}}, recheck.\n</think>\n\nThe answer is $\\boxed{{{n}}}$."
        yield "think_trap", [str(n)], text, True
        text = f"<think>\nIt is \\boxed{{{n}}}.\n</think>\n\nOn reflection the answer is $\\boxed{{{wrong}}}$."
        yield "think_trap", [str(n)], text, False
    yield "multi_boxed", ["\\{1, 2\\}"], response("$\\boxed{1}$ and $\\boxed{2}$", rng, boxed=False), True
    yield "multi_boxed", ["3"], "So $x=\\boxed{3}$, and checking, $y = \\boxed{4}$.", False
    yield "percent_after", ["0.1"], "The rate is $\\boxed{10}$\\%.", True
    yield "final_answer", ["7"], "The final answer is $7$. I hope it is correct.", True
    yield (
        "long",
        ["3"],
        "<think>\n" + "Consider the terms one at a time. " * 200 + "\n</think>\n\n" + "x " * 50 + "$\\boxed{3}$",
        True,
    )


GENERATORS = [
    fractions,
    integers,
    surds,
    sets_intervals,
    matrices,
    units_percent,
    equations,
    misc,
    unboxed_and_missing,
    thinking_traps,
]


def main() -> int:
    rng = random.Random(20261129)
    n = 0
    for gen in GENERATORS:
        for category, refs, text, label in gen(rng):
            n += 1
            plain = plain_correct(text, refs)
            row = {"id": n, "category": category, "references": refs, "response": text, "label": label, "plain": plain}
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{n} pairs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
