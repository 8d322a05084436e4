"""Shared fixtures: the model directory every test that needs a tokenizer uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tokenizer_dirs import build_fixture_dir

REPO = Path(__file__).resolve().parent.parent
TINY_MIMO = REPO / "models" / "tiny-mimo"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny MiMo checkpoint (tokenizer and chat template); a fixture tokenizer while it is being trained."""
    if (TINY_MIMO / "tokenizer.json").exists():
        return TINY_MIMO
    return build_fixture_dir(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The trained tiny MiMo (weights included); tests that run the model need it."""
    if not (TINY_MIMO / "model.safetensors").exists():
        pytest.fail(f"{TINY_MIMO} has no model.safetensors: train it with models/tiny-mimo/train.py")
    return TINY_MIMO
