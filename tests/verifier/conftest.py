"""Fixtures for the verifier tests."""

from __future__ import annotations

import shutil

import pytest

from services.verifier.sandbox import SandboxConfig
from tests.support.verifier_sandbox import RecordingSandbox


@pytest.fixture(scope="session")
def sandbox() -> RecordingSandbox:
    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is required for the code verifier: apt-get install bubblewrap")
    return RecordingSandbox(SandboxConfig())
