"""The images the chart runs: every file a Dockerfile copies exists, and the images provide what the chart
assumes (the user it runs as, the tiny model's path, the verifier's sandbox tools, SGLang's Python).
No Docker daemon runs here, so the images are not built by the tests."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.support.chart import CHART, REPO

DOCKER = REPO / "docker"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def arg_default(dockerfile: Path, name: str) -> str:
    for word, rest in instructions(dockerfile):
        if word == "ARG" and rest.startswith(f"{name}="):
            return rest.split("=", 1)[1]
    raise AssertionError(f"{dockerfile.name}: no ARG {name}")


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.sglang"])
def test_every_copied_path_exists_and_the_image_runs_as_the_charts_user(name: str) -> None:
    dockerfile = DOCKER / name
    for word, rest in instructions(dockerfile):
        if word == "COPY" and "--from=" not in rest:
            *sources, _ = rest.split()
            for source in sources:
                assert (REPO / source).exists(), f"{name}: COPY {source}: no such path"
    users = [rest for word, rest in instructions(dockerfile) if word == "USER"]
    uid = VALUES["global"]["podSecurityContext"]["runAsUser"]
    assert users[-1] == f"{uid}:{uid}", f"{name} must end as the chart's non-root user {uid}"
    ignore = (DOCKER / f"{name}.dockerignore").read_text()
    assert "!services/**" in ignore and "!operators/**" in ignore


def test_the_main_image_has_the_cpu_demo_model_and_the_sandbox_tools() -> None:
    dockerfile = DOCKER / "Dockerfile"
    text = dockerfile.read_text()
    demo = yaml.safe_load((CHART / "ci" / "cpu-demo-values.yaml").read_text())
    assert f"COPY models/tiny-mimo {demo['model']['path']}" in text
    assert "bubblewrap" in text and "python3-minimal" in text  # the verifier's default --sandbox-python
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["torch"]
    assert f"torch=={arg_default(dockerfile, 'TORCH_VERSION')}" in extra, "the image pins another torch"


def test_the_sglang_image_matches_the_charts_sglang_python() -> None:
    dockerfile = DOCKER / "Dockerfile.sglang"
    assert VALUES["workers"]["sglangPython"] == arg_default(dockerfile, "SGLANG_PYTHON")
    assert "smg-grpc-servicer>=0.5.5" in dockerfile.read_text()
    assert VALUES["workers"]["engine"] == "sglang" and VALUES["workers"]["image"]["repository"] == ""
