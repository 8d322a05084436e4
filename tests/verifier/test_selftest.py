"""The startup self-test: it passes for the real sandbox and catches a sandbox that leaks."""

from __future__ import annotations

import pytest

from services.verifier.__main__ import main
from services.verifier.sandbox import Sandbox, SandboxConfig
from services.verifier.selftest import self_test


class LeakySandbox(Sandbox):
    """The real sandbox with the network shared and /work bound in: isolation does not hold."""

    def command(self) -> list[str]:
        argv = super().command()
        at = argv.index("--unshare-all") + 1
        return [*argv[:at], "--share-net", "--ro-bind", "/work", "/work", *argv[at:]]


async def test_the_real_sandbox_passes() -> None:
    assert await self_test(Sandbox(SandboxConfig())) == []


async def test_a_leaky_sandbox_is_caught() -> None:
    problems = await self_test(LeakySandbox(SandboxConfig()))
    text = "\n".join(problems)
    assert "host's loopback" in text and "visible /work" in text


async def test_unsafe_mode_skips_the_self_test_and_missing_bwrap_is_named() -> None:
    assert await self_test(Sandbox(SandboxConfig(is_isolated=False))) == []
    problems = await self_test(Sandbox(SandboxConfig(bwrap="/nonexistent/bwrap")))
    assert problems and "install bubblewrap" in problems[0]


def test_the_service_refuses_to_start_without_isolation(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--bwrap", "/nonexistent/bwrap", "--listen", "127.0.0.1:0", "--metrics-port", "-1"])
    err = capsys.readouterr().err
    assert code == 3
    assert "refusing to start" in err and "install bubblewrap" in err and "--unsafe-no-sandbox" in err


async def test_unsafe_mode_runs_code_without_bubblewrap() -> None:
    from services.verifier.domain import CodeTest, TestStatus
    from tests.support.verifier_sandbox import run_code

    unsafe = Sandbox(SandboxConfig(is_isolated=False))
    assert "bwrap" not in unsafe.command()
    score = await run_code(unsafe, "print(int(input()) + 1)", [CodeTest("1", "2"), CodeTest("2", "4")])
    assert [t.status for t in score.tests] == [TestStatus.PASSED, TestStatus.WRONG_ANSWER]
