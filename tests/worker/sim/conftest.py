"""Fixtures of the simulator tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.worker.engines.sim.synthetic_model import write_synthetic_model


@pytest.fixture(scope="session")
def sim_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_model(tmp_path_factory.mktemp("sim-model"), max_context_length=32768)
