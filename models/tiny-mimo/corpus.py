"""The synthetic reasoning corpus: four levels of arithmetic and algebra, worked digit by digit."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

NUM_LEVELS = 4
HELD_OUT_PERCENT = 20  # share of number combinations never trained on
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
COLUMNS = ("ones", "tens", "hundreds", "thousands", "ten-thousands")
NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Faye", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena", "Mia", "Noor")
ITEMS = ("apples", "stickers", "marbles", "coins", "books", "shells", "cards", "pens", "stamps", "beads")
GAIN = ("gets {n} more", "finds {n} more", "buys {n} more", "is given {n} more")
LOSS = ("gives away {n}", "loses {n}", "sells {n}", "uses {n}")


@dataclass(frozen=True, slots=True)
class Problem:
    level: int
    key: tuple[int | str, ...]  # the number combination; the held-out split is drawn over these
    question: str
    reasoning: str  # the text inside <think>…</think>
    answer: int

    @property
    def completion(self) -> str:
        """The assistant message, as MiMo writes it (the think block is plain text)."""
        return f"<think>\n{self.reasoning}\n</think>\nThe answer is \\boxed{{{self.answer}}}."


def render_prompt(question: str, system: str | None = "") -> str:
    """ChatML exactly as the Qwen2.5/MiMo template renders it with add_generation_prompt=True."""
    system_text = DEFAULT_SYSTEM_PROMPT if system is None else system
    return (
        f"<|im_start|>system\n{system_text}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )


def _digits(n: int) -> list[int]:
    return [int(c) for c in reversed(str(n))]  # ones first


def add_steps(a: int, b: int) -> list[str]:
    da, db = _digits(a), _digits(b)
    lines, carry = [f"{a} + {b}"], 0
    for i in range(max(len(da), len(db))):
        x, y = (da[i] if i < len(da) else 0), (db[i] if i < len(db) else 0)
        total = x + y + carry
        expr = f"{x} + {y}" + (f" + {carry}" if carry else "")
        carry = total // 10
        lines.append(f"{COLUMNS[i]}: {expr} = {total}" + (f", carry {carry}" if carry else ""))
    if carry:
        lines.append(f"{COLUMNS[max(len(da), len(db))]}: {carry}")
    return [*lines, f"{a} + {b} = {a + b}"]


def sub_steps(a: int, b: int) -> list[str]:
    assert a >= b
    da, db = _digits(a), _digits(b)
    lines, borrow = [f"{a} - {b}"], 0
    for i in range(len(da)):
        x, y = da[i], (db[i] if i < len(db) else 0)
        head = f"{x} - 1 = {x - 1}, " if borrow else ""
        x -= borrow
        if x < y:
            lines.append(f"{COLUMNS[i]}: {head}{x} - {y}, borrow, {x + 10} - {y} = {x + 10 - y}")
            borrow = 1
        else:
            lines.append(f"{COLUMNS[i]}: {head}{x} - {y} = {x - y}")
            borrow = 0
    return [*lines, f"{a} - {b} = {a - b}"]


def mul_steps(a: int, d: int) -> list[str]:
    da = _digits(a)
    lines, carry = [f"{a} * {d}"], 0
    for i, x in enumerate(da):
        total = x * d + carry
        expr = f"{x} * {d}" + (f" + {carry}" if carry else "")
        carry = total // 10
        lines.append(f"{COLUMNS[i]}: {expr} = {total}" + (f", carry {carry}" if carry else ""))
    if carry:
        lines.append(f"{COLUMNS[len(da)]}: {carry}")
    return [*lines, f"{a} * {d} = {a * d}"]


def div_steps(n: int, d: int) -> list[str]:
    """Long division of n by a d that divides it, most significant digit first."""
    digits = [int(c) for c in str(n)]
    lines, remainder = [f"{n} / {d}"], 0
    for i, digit in enumerate(digits):
        current, column = remainder * 10 + digit, COLUMNS[len(digits) - 1 - i]
        q, remainder = divmod(current, d)
        lines.append(f"{column}: {current} / {d} = {q}, {d} * {q} = {d * q}, remainder {remainder}")
    return [*lines, f"{n} / {d} = {n // d}"]


def level1(rng: random.Random) -> Problem:
    """Two-digit addition or subtraction."""
    a, b, op = rng.randint(10, 99), rng.randint(10, 99), rng.choice("+-")
    if op == "-" and a < b:
        a, b = b, a
    steps, answer = (add_steps(a, b), a + b) if op == "+" else (sub_steps(a, b), a - b)
    question = rng.choice(("What is {}?", "Compute {}.", "Calculate {}."))
    return Problem(1, (a, op, b), question.format(f"{a} {op} {b}"), "\n".join(steps), answer)


def level2(rng: random.Random) -> Problem:
    """Two-digit times one-digit multiplication."""
    a, d = rng.randint(10, 99), rng.randint(2, 9)
    question = rng.choice(("What is {a} * {d}?", "Compute {a} * {d}.", "What is {a} times {d}?"))
    return Problem(2, (a, d), question.format(a=a, d=d), "\n".join(mul_steps(a, d)), a * d)


def level3(rng: random.Random) -> Problem:
    """A two-step word problem: a start amount, a gain or loss, then another."""
    a, b, c = rng.randint(10, 99), rng.randint(10, 99), rng.randint(10, 99)
    ops = rng.choice(("+-", "++", "-+", "--"))
    if ops[0] == "-" and b > a:
        a, b = b, a
    mid = a + b if ops[0] == "+" else a - b
    if ops[1] == "-" and c > mid:
        ops = ops[0] + "+"
    end = mid + c if ops[1] == "+" else mid - c
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    verb1 = rng.choice(GAIN if ops[0] == "+" else LOSS).format(n=b)
    verb2 = rng.choice(GAIN if ops[1] == "+" else LOSS).format(n=c)
    question = f"{name} has {a} {item}. {name} {verb1} and then {verb2}. How many {item} does {name} have now?"
    lines = [f"start: {a} {item}", f"{verb1}: {a} {ops[0]} {b}"]
    lines += add_steps(a, b)[1:] if ops[0] == "+" else sub_steps(a, b)[1:]
    lines += [f"{verb2}: {mid} {ops[1]} {c}"]
    lines += add_steps(mid, c)[1:] if ops[1] == "+" else sub_steps(mid, c)[1:]
    return Problem(3, (a, ops[0], b, ops[1], c), question, "\n".join(lines), end)


def level4(rng: random.Random) -> Problem:
    """A two-step linear equation a*x ± b = c; dividing by a two-digit a is what makes it hard."""
    a, x, b, op = rng.randint(2, 19), rng.randint(10, 99), rng.randint(1, 99), rng.choice("+-")
    if op == "-" and b >= a * x:
        op = "+"
    c = a * x + b if op == "+" else a * x - b
    equation = f"{a}x {op} {b} = {c}"
    question = rng.choice(("Solve for x: {}.", "Find x if {}.", "What is x when {}?")).format(equation)
    if op == "+":
        lines = [equation, f"subtract {b} from both sides: {a}x = {c} - {b}", *sub_steps(c, b)[1:]]
    else:
        lines = [equation, f"add {b} to both sides: {a}x = {c} + {b}", *add_steps(c, b)[1:]]
    lines += [f"divide both sides by {a}: x = {a * x} / {a}", *div_steps(a * x, a)[1:], f"x = {x}"]
    return Problem(4, (a, x, op, b), question, "\n".join(lines), x)


LEVELS: dict[int, Callable[[random.Random], Problem]] = {1: level1, 2: level2, 3: level3, 4: level4}


def is_held_out(problem: Problem, seed: int) -> bool:
    """A stable ~20% of each level's number combinations, fixed by the seed (not by Python's hash)."""
    digest = hashlib.sha256(f"{seed}|{problem.level}|{problem.key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < HELD_OUT_PERCENT


def train_problems(seed: int) -> Iterator[Problem]:
    """An endless stream of training problems, levels in turn, held-out combinations skipped."""
    rng = random.Random(f"train-{seed}")
    while True:
        for make in LEVELS.values():
            problem = make(rng)
            while is_held_out(problem, seed):
                problem = make(rng)
            yield problem


def held_out_problems(seed: int, per_level: int) -> list[Problem]:
    """`per_level` distinct held-out combinations of each level, in a fixed order."""
    rng = random.Random(f"eval-{seed}")
    problems: list[Problem] = []
    for level, make in LEVELS.items():
        seen: set[tuple[int | str, ...]] = set()
        for _ in range(200_000):
            if len(seen) == per_level:
                break
            problem = make(rng)
            if is_held_out(problem, seed) and problem.key not in seen:
                seen.add(problem.key)
                problems.append(problem)
        if len(seen) < per_level:
            raise ValueError(f"level {level} has only {len(seen)} held-out combinations")
    return problems
