"""Helpers for the verifier tests: a real bubblewrap sandbox that remembers its sessions, and a code runner."""

from __future__ import annotations

import os
from collections.abc import Sequence

from services.verifier.code import CodeScore, score_code
from services.verifier.domain import CodeTask, CodeTest, RewardMode
from services.verifier.sandbox import Limits, Sandbox, SandboxConfig, Session

FAST_LIMITS = Limits(time_limit_s=0.5, memory_bytes=256 << 20, output_bytes=64 << 10)


class RecordingSandbox(Sandbox):
    """The real sandbox, remembering every session so tests can check nothing outlives it."""

    def __init__(self, config: SandboxConfig) -> None:
        super().__init__(config)
        self.sessions: list[Session] = []

    def session(self, language: str, source: str, entry_point: str, limits: Limits) -> Session:
        s = super().session(language, source, entry_point, limits)
        self.sessions.append(s)
        return s


def fenced(source: str, language: str = "python") -> str:
    return f"<think>\nLet me write it.\n</think>\n\n```{language}\n{source}\n```\n"


async def run_code(
    sandbox: Sandbox,
    source: str,
    tests: Sequence[CodeTest],
    *,
    language: str = "python",
    mode: RewardMode = RewardMode.PASS_RATE,
    limits: Limits = FAST_LIMITS,
    entry_point: str = "",
) -> CodeScore:
    task = CodeTask(tests=tuple(tests), language=language, reward_mode=mode, entry_point=entry_point)
    return await score_code(task, fenced(source, language), sandbox, limits)


def process_exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def uid_of(pid: int) -> int:
    return os.stat(f"/proc/{pid}").st_uid
