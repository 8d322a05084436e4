"""The startup self-test: it passes for the real sandbox and catches a sandbox that leaks."""

from __future__ import annotations

import os
import tempfile

import pytest

from services.verifier.__main__ import main
from services.verifier.sandbox import Sandbox, SandboxConfig
from services.verifier.selftest import self_test


class LeakySandbox(Sandbox):
    """The real sandbox with the network shared and a host directory bound in: isolation does not hold."""

    def __init__(self, config: SandboxConfig, leaked: str) -> None:
        super().__init__(config)
        self.leaked = leaked

    def isolate(self, argv: list[str], binds=(), wrapper=()) -> list[str]:  # type: ignore[no-untyped-def]
        argv = super().isolate(argv, binds, wrapper)
        at = argv.index("--unshare-all") + 1
        shared = [*argv[:at], "--share-net", *argv[at:]]
        at = shared.index("--chdir")  # after the sandbox's own /tmp, so a leak under /tmp is seen too
        return [*shared[:at], "--ro-bind", self.leaked, self.leaked, *shared[at:]]


async def test_the_real_sandbox_passes() -> None:
    assert await self_test(Sandbox(SandboxConfig())) == []


async def test_the_real_sandbox_passes_when_started_from_tmp(monkeypatch: pytest.MonkeyPatch) -> None:
    """The image's working directory is /tmp (the chart mounts an emptyDir there). The sandbox has a /tmp
    of its own, a fresh tmpfs, so the host's /tmp is not visible: a check by name alone refused to start."""
    monkeypatch.chdir(tempfile.gettempdir())
    assert await self_test(Sandbox(SandboxConfig())) == []


async def test_a_leaky_sandbox_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sandbox that sees the host's working directory (bound at its own path) and the network fails."""
    with tempfile.TemporaryDirectory(prefix="mimo-leak-") as workdir:
        os.chmod(workdir, 0o755)  # the sandbox uid (65534) must be able to reach it for bwrap to bind it
        monkeypatch.chdir(workdir)
        problems = await self_test(LeakySandbox(SandboxConfig(), workdir))
        monkeypatch.undo()
    text = "\n".join(problems)
    assert "host's loopback" in text and f"visible {workdir}" in text


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
