"""The math pool: pathological inputs end within the deadline, overrunning workers are replaced, serving goes on."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from services.verifier.domain import Verdict
from services.verifier.pool import MathPool, PoolSettings

SUM_3000 = "\\boxed{" + "+".join(str(i) for i in range(3000)) + "}"
TOWER = "$\\boxed{9^{9^{9^{9}}}}$"  # verify needs far longer than any deadline here
PATHOLOGICAL = {
    "tower of powers": TOWER,
    "huge factorial": "$\\boxed{(10^{100000})!}$",
    "3000-term sum": SUM_3000,
    "power tower of 2": "$\\boxed{2^{2^{2^{2^{5}}}}}$",
}


async def test_pathological_inputs_end_within_the_deadline_and_the_pool_keeps_serving() -> None:
    settings = PoolSettings(num_processes=2, parse_timeout_s=1, verify_timeout_s=1, hard_deadline_s=4.0)
    pool = MathPool(settings)
    pool.start()
    try:
        start = time.monotonic()
        outcomes = await asyncio.gather(*(pool.check(text, ("1",)) for text in PATHOLOGICAL.values()))
        elapsed = time.monotonic() - start
        for name, outcome in zip(PATHOLOGICAL, outcomes, strict=True):
            assert not outcome.correct, name
            assert outcome.verdict in (Verdict.TIMEOUT, Verdict.INCORRECT), (name, outcome)
            assert outcome.elapsed_s <= settings.hard_deadline_s + 0.5, name
        # two workers, four tasks, each bounded by the deadline
        assert elapsed < 2 * settings.hard_deadline_s + 3
        assert (await pool.check("$\\boxed{\\frac{1}{2}}$", ("0.5",))).verdict == Verdict.CORRECT
    finally:
        await pool.close()


async def test_a_worker_past_the_hard_deadline_is_killed_and_replaced() -> None:
    # math-verify's own timeouts (5 s) are longer than the hard deadline, so the parent must kill.
    pool = MathPool(PoolSettings(num_processes=1, hard_deadline_s=1.5))
    pool.start()
    try:
        old_pid = pool._workers[0].process.pid
        start = time.monotonic()
        slow, after = await asyncio.gather(pool.check(TOWER, ("1",)), pool.check("$\\boxed{7}$", ("7",)))
        assert slow.verdict == Verdict.TIMEOUT and "hard deadline" in slow.reason
        assert time.monotonic() - start < 5.0
        assert after.verdict == Verdict.CORRECT  # queued behind it, served by the replacement
        assert pool.num_restarts == 1 and pool._workers[0].process.pid != old_pid
    finally:
        await pool.close()


async def test_a_worker_that_dies_is_replaced_and_its_task_is_an_error() -> None:
    pool = MathPool(PoolSettings(num_processes=1, hard_deadline_s=10.0))
    pool.start()
    try:
        pid = pool._workers[0].process.pid
        task = asyncio.ensure_future(pool.check(TOWER, ("1",)))
        await asyncio.sleep(0.5)
        os.kill(pid, signal.SIGKILL)  # as the OOM killer would
        outcome = await asyncio.wait_for(task, 5.0)
        assert outcome.verdict == Verdict.ERROR and "died" in outcome.reason
        assert (await pool.check("$\\boxed{7}$", ("7",))).correct
    finally:
        await pool.close()


def test_a_script_without_a_main_guard_starts_its_workers_once(tmp_path: Path) -> None:
    # Forkserver workers would otherwise re-run the script and start pools from inside the pool.
    script = tmp_path / "no_guard.py"
    script.write_text(
        "import asyncio\nfrom services.verifier.pool import MathPool, PoolSettings\nprint('body', flush=True)\n"
        "async def main():\n    pool = MathPool(PoolSettings(num_processes=2))\n    pool.start()\n"
        "    print((await pool.check('$\\\\boxed{2}$', ('2',))).verdict.name, flush=True)\n    await pool.close()\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["body", "CORRECT"]
