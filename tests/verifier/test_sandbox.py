"""Untrusted code in the real bubblewrap sandbox: each abuse gets the right status and the host is unaffected."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from services.verifier.domain import CodeTest, RewardMode, TestStatus, Verdict
from tests.support.verifier_sandbox import FAST_LIMITS, RecordingSandbox, process_exists, run_code

SUM = "import sys\nprint(sum(map(int, sys.stdin.read().split())))"


def _statuses(score) -> list[TestStatus]:  # type: ignore[no-untyped-def]
    return [t.status for t in score.tests]


async def test_correct_and_wrong_answers(sandbox: RecordingSandbox) -> None:
    tests = [CodeTest("1 2", "3"), CodeTest("10 20 30", "60"), CodeTest("5", "6")]
    score = await run_code(sandbox, SUM, tests)
    assert _statuses(score) == [TestStatus.PASSED, TestStatus.PASSED, TestStatus.WRONG_ANSWER]
    assert score.verdict == Verdict.PARTIAL and score.reward == pytest.approx(2 / 3)
    assert "line 1: expected '6', got '5'" in score.tests[2].detail


async def test_a_guarded_main_runs_and_a_crash_is_a_runtime_error(sandbox: RecordingSandbox) -> None:
    main = "def main():\n    print(int(input()) * 2)\n\nif __name__ == '__main__':\n    main()"
    assert _statuses(await run_code(sandbox, main, [CodeTest("21", "42")])) == [TestStatus.PASSED]
    score = await run_code(sandbox, "x = 1 / 0", [CodeTest("", "1")])
    assert _statuses(score) == [TestStatus.RUNTIME_ERROR]
    assert "ZeroDivisionError" in score.tests[0].detail and "runner" not in score.tests[0].detail
    assert score.reward == 0.0 and score.verdict == Verdict.INCORRECT


async def test_infinite_loop_and_sleep_hit_the_time_limit(sandbox: RecordingSandbox) -> None:
    start = time.monotonic()
    score = await run_code(sandbox, "while True:\n    pass", [CodeTest("", "")])
    score_sleep = await run_code(sandbox, "import time\ntime.sleep(60)", [CodeTest("", "")])
    assert _statuses(score) == [TestStatus.TIME_LIMIT] and _statuses(score_sleep) == [TestStatus.TIME_LIMIT]
    assert time.monotonic() - start < 2 * (FAST_LIMITS.wall_limit_s + 1.5)


async def test_memory_bombs_hit_the_memory_limit(sandbox: RecordingSandbox) -> None:
    at_once = await run_code(sandbox, "x = bytearray(8 << 30)\nprint(len(x))", [CodeTest("", "0")])
    gradual = await run_code(sandbox, "a = []\nwhile True:\n    a.append(bytearray(10 ** 7))", [CodeTest("", "0")])
    assert _statuses(at_once) == [TestStatus.MEMORY_LIMIT] and _statuses(gradual) == [TestStatus.MEMORY_LIMIT]


async def test_fork_bomb_is_contained(sandbox: RecordingSandbox) -> None:
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    score = await run_code(sandbox, bomb, [CodeTest("", "")])
    assert _statuses(score)[0] in (TestStatus.TIME_LIMIT, TestStatus.RUNTIME_ERROR)
    assert not any(process_exists(s.pid) for s in sandbox.sessions if s.pid)  # the whole sandbox is gone
    assert subprocess.run(["true"], check=False).returncode == 0  # and the host can still fork


async def test_output_flood_stops_at_the_cap(sandbox: RecordingSandbox) -> None:
    start = time.monotonic()
    score = await run_code(sandbox, "while True:\n    print('x' * 1000)", [CodeTest("", "")])
    assert _statuses(score) == [TestStatus.OUTPUT_LIMIT]
    assert time.monotonic() - start < FAST_LIMITS.wall_limit_s


async def test_no_network_not_even_the_host_loopback(sandbox: RecordingSandbox) -> None:
    connections: list[int] = []
    server = await asyncio.start_server(lambda r, w: (connections.append(1), w.close()), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    probe = (
        "import socket, sys\nport = int(sys.stdin.read())\nreached = []\n"
        "for host, p in [('127.0.0.1', port), ('1.1.1.1', 53), ('8.8.8.8', 443)]:\n"
        "    try:\n        socket.create_connection((host, p), timeout=1).close()\n        reached.append(host)\n"
        "    except OSError:\n        pass\n"
        "print('blocked' if not reached else 'reached ' + ' '.join(reached))"
    )
    try:
        score = await run_code(sandbox, probe, [CodeTest(str(port), "blocked")])
    finally:
        server.close()
    assert _statuses(score) == [TestStatus.PASSED], score.tests[0].detail
    assert connections == []


async def test_host_files_are_invisible(sandbox: RecordingSandbox, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the answer is 42")
    paths = [str(secret), str(tmp_path), "/work/main/pyproject.toml", "/root", "/etc/passwd", "/home", "/var/log"]
    probe = (
        "import json, os, sys\nseen = [p for p in json.loads(sys.stdin.read()) if os.path.exists(p)]\n"
        "print('hidden' if not seen else 'seen ' + ' '.join(seen))"
    )
    score = await run_code(sandbox, probe, [CodeTest(json.dumps(paths), "hidden")])
    assert _statuses(score) == [TestStatus.PASSED], score.tests[0].detail


async def test_only_the_work_directory_is_writable(sandbox: RecordingSandbox, tmp_path: Path) -> None:
    targets = ["/usr/lib/evil", "/evil", "/etc/evil", "/proc/evil", str(tmp_path / "evil"), "/bin/evil"]
    probe = (
        "import json, sys\nwritten = []\nfor p in json.loads(sys.stdin.read()):\n"
        "    try:\n        open(p, 'w').write('x')\n        written.append(p)\n    except OSError:\n        pass\n"
        "open('mine.txt', 'w').write('fine')\nprint('denied' if not written else 'wrote ' + ' '.join(written))"
    )
    score = await run_code(sandbox, probe, [CodeTest(json.dumps(targets), "denied")])
    assert _statuses(score) == [TestStatus.PASSED], score.tests[0].detail
    assert not any(os.path.exists(t) for t in targets)


async def test_nothing_survives_from_one_test_to_the_next(sandbox: RecordingSandbox) -> None:
    # The first test leaves a file in its work dir, one in /tmp, and a daemon; the second looks for them.
    program = (
        "import os, sys, time\n"
        "if sys.stdin.read().strip() == 'first':\n"
        "    open('left.txt', 'w').write('x')\n    open('/tmp/left2.txt', 'w').write('x')\n"
        "    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n            time.sleep(30)\n"
        "        os._exit(0)\n    print('ok')\n"
        "else:\n"
        "    others = [p for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, os.getpid(), os.getppid())]\n"
        "    files = [f for f in ('left.txt', '/tmp/left2.txt') if os.path.exists(f)]\n"
        "    print('clean' if not others and not files else f'dirty {others} {files}')"
    )
    score = await run_code(sandbox, program, [CodeTest("first", "ok"), CodeTest("second", "clean")])
    assert _statuses(score) == [TestStatus.PASSED, TestStatus.PASSED], [t.detail for t in score.tests]


async def test_a_test_cannot_kill_or_stop_the_runner(sandbox: RecordingSandbox) -> None:
    # The runner is pid 1 of the sandbox: signals from inside it are ignored.
    program = (
        "import os, signal, sys\nif sys.stdin.read().strip() == 'kill':\n"
        "    for sig in (signal.SIGSTOP, signal.SIGINT, signal.SIGTERM, signal.SIGKILL):\n"
        "        os.kill(os.getppid(), sig)\nprint('ok', os.getppid())"
    )
    tests = [CodeTest("fine", "ok 1"), CodeTest("kill", "ok 1"), CodeTest("fine", "ok 1")]
    score = await run_code(sandbox, program, tests, mode=RewardMode.SOFT)
    assert _statuses(score) == [TestStatus.PASSED] * 3, [t.detail for t in score.tests]


async def test_strict_mode_stops_once_no_reward_is_reachable(sandbox: RecordingSandbox) -> None:
    tests = [CodeTest("1", "1", level=2), CodeTest("1", "2", level=1), CodeTest("2", "2", level=1)]
    score = await run_code(sandbox, "print(input())", tests, mode=RewardMode.STRICT)
    # Level 1 runs first; its first failure stops the run: no later test can add reward.
    assert _statuses(score) == [TestStatus.UNSPECIFIED, TestStatus.WRONG_ANSWER, TestStatus.UNSPECIFIED]
    assert score.reward == 0.0 and "not run" in score.reason


async def test_function_call_tests(sandbox: RecordingSandbox) -> None:
    source = "def add(a, b):\n    print('noise')\n    return [a + b, {'n': a * b}]"
    tests = [
        CodeTest(args_json="[2, 3]", expected_json='[5, {"n": 6}]'),
        CodeTest(args_json="[1, 1]", expected_json="[3, {}]"),
    ]
    score = await run_code(sandbox, source, tests, entry_point="add")
    assert _statuses(score) == [TestStatus.PASSED, TestStatus.WRONG_ANSWER]
    leet = "class Solution:\n    def twice(self, x):\n        return 2 * x"
    assert _statuses(
        await run_code(sandbox, leet, [CodeTest(args_json="[4]", expected_json="8")], entry_point="twice")
    ) == [TestStatus.PASSED]
    raising = "def f(x):\n    raise ValueError('no')"
    score = await run_code(sandbox, raising, [CodeTest(args_json="[1]", expected_json="null")], entry_point="f")
    assert _statuses(score) == [TestStatus.RUNTIME_ERROR] and score.reward == 0.0


async def test_no_code_block_is_no_answer(sandbox: RecordingSandbox) -> None:
    from services.verifier.code import score_code
    from services.verifier.domain import CodeTask

    score = await score_code(CodeTask(tests=(CodeTest("", ""),)), "I would use a loop.", sandbox, FAST_LIMITS)
    assert score.verdict == Verdict.NO_ANSWER and score.reward == 0.0


@pytest.mark.skipif(not os.path.exists("/usr/bin/g++"), reason="g++ is not installed")
async def test_cpp_correct_compile_error_and_crash(sandbox: RecordingSandbox) -> None:
    good = '#include <iostream>\nint main(){long a,b;std::cin>>a>>b;std::cout<<a+b<<"\\n";}'
    score = await run_code(sandbox, good, [CodeTest("2 3", "5"), CodeTest("1 1", "3")], language="cpp")
    assert _statuses(score) == [TestStatus.PASSED, TestStatus.WRONG_ANSWER]
    score = await run_code(sandbox, "int main( {", [CodeTest("", "")], language="cpp")
    assert _statuses(score) == [TestStatus.COMPILE_ERROR] and "error" in score.reason
    crash = "int main(){volatile int *p = nullptr; return *p;}"
    assert _statuses(await run_code(sandbox, crash, [CodeTest("", "")], language="cpp")) == [TestStatus.RUNTIME_ERROR]


async def test_a_fork_and_allocate_bomb_is_capped_by_the_sandbox_memory_cgroup(sandbox: RecordingSandbox) -> None:
    if not sandbox.cgroups.is_enabled:
        pytest.skip("no writable cgroup v1 memory controller here: only the rlimits bound this")
    # Eight processes of 200 MB each: every one is within RLIMIT_AS, together they pass the cgroup cap.
    bomb = (
        "import os, time\nkids = []\nfor _ in range(8):\n    pid = os.fork()\n    if pid == 0:\n"
        "        b = b'x' * (200 << 20)\n        time.sleep(0.5)\n        os._exit(0)\n    kids.append(pid)\n"
        "print(sum(os.waitpid(k, 0)[1] != 0 for k in kids))"
    )
    async with sandbox.session("python", bomb, "", FAST_LIMITS) as session:
        cgroup = session._cgroup
        assert cgroup is not None
        outcome = await session.run("")
        peak = int((cgroup / "memory.max_usage_in_bytes").read_text())
    assert outcome.oom_killed
    assert peak <= FAST_LIMITS.memory_bytes + (256 << 20)
    score = await run_code(sandbox, bomb, [CodeTest("", "0")])
    assert _statuses(score) == [TestStatus.MEMORY_LIMIT]


async def test_a_test_cannot_ptrace_or_read_the_runner(sandbox: RecordingSandbox) -> None:
    probe = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nattached = libc.ptrace(16, 1, 0, 0) == 0\n"
        "try:\n    open('/proc/1/mem', 'rb').read(1)\n    readable = True\nexcept OSError:\n    readable = False\n"
        "print('attach', attached, 'mem', readable)"
    )
    score = await run_code(sandbox, probe, [CodeTest("", "attach False mem False")])
    assert _statuses(score) == [TestStatus.PASSED], score.tests[0].detail


async def test_a_deep_directory_tree_does_not_break_the_next_test(sandbox: RecordingSandbox) -> None:
    # D6: the first test builds 1,500- and 5,000-deep trees (the deeper one past PATH_MAX, its bottom made
    # unreadable) in the work dir and in /tmp; the runner's cleanup before the second test must remove them
    # all, not crash with RecursionError (which made the second test a RUNTIME_ERROR with the runner's traceback).
    program = (
        "import os, sys\n"
        "def build(base, depth, lock=False):\n"
        "    here = os.open('.', os.O_RDONLY)\n"
        "    os.chdir(base)\n"
        "    for _ in range(depth):\n"
        "        os.mkdir('d')\n        os.chdir('d')\n"
        "    open('leaf', 'w').write('x')\n"
        "    if lock:\n        os.chmod('.', 0)\n"
        "    os.fchdir(here)\n"
        "if sys.stdin.read().strip() == 'first':\n"
        "    os.mkdir('/tmp/deep')\n    build('.', 1500)\n    build('/tmp/deep', 5000, lock=True)\n"
        "    print('built')\n"
        "else:\n"
        "    left = [p for p in ('d', '/tmp/deep') if os.path.exists(p)]\n"
        "    print('clean' if not left else f'left {left}')"
    )
    tests = [CodeTest("first", "built"), CodeTest("second", "clean"), CodeTest("second", "clean")]
    score = await run_code(sandbox, program, tests)
    assert _statuses(score) == [TestStatus.PASSED] * 3, [t.detail for t in score.tests]
