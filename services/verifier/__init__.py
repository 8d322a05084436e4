"""The reward/verifier service: math answers through math-verify, code in a bubblewrap sandbox, MiMo's rewards.

In-process use (no gRPC): `Verifier`, `VerifierSettings` and the domain types re-exported here.
"""

from services.verifier.domain import (
    CodeTask,
    CodeTest,
    MathTask,
    Result,
    RewardMode,
    Task,
    TestResult,
    TestStatus,
    Verdict,
)
from services.verifier.verifier import Overloaded, Verifier, VerifierSettings

__all__ = [
    "CodeTask",
    "CodeTest",
    "MathTask",
    "Overloaded",
    "Result",
    "RewardMode",
    "Task",
    "TestResult",
    "TestStatus",
    "Verdict",
    "Verifier",
    "VerifierSettings",
]
