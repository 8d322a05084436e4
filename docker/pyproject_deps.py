"""Print the third-party requirements of pyproject.toml files, one a line, for an image's dependency layer.

    python pyproject_deps.py pyproject.toml[torch] sdk/python/pyproject.toml > requirements.txt

Each argument is a pyproject.toml, optionally followed by [extra,...]; its build requirements come too.
The projects themselves (their `project.name`s) are left out: the Dockerfiles install them afterwards with
--no-deps --no-build-isolation, in a layer of their own, so that a change to the code reuses the layer of
dependencies, which only a pyproject.toml change rebuilds. Uses only the standard library (runs on the image's Python before anything is installed).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def _name(requirement: str) -> str:
    """The normalised distribution name a requirement string starts with (PEP 503)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(specs: list[str]) -> list[str]:
    """`path[extra,...]` arguments -> their build requirements, dependencies and extras, less the projects."""
    projects, found = set(), []
    for spec in specs:
        path, _, extras = spec.partition("[")
        pyproject = tomllib.loads(Path(path).read_text())
        project = pyproject["project"]
        found += pyproject.get("build-system", {}).get("requires", [])
        projects.add(_name(project["name"]))
        found += project.get("dependencies", [])
        optional = project.get("optional-dependencies", {})
        for extra in filter(None, extras.rstrip("]").split(",")):
            if extra not in optional:
                raise ValueError(f"{path}: no optional-dependencies extra {extra!r}")
            found += optional[extra]
    return [r for r in dict.fromkeys(found) if _name(r) not in projects]


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1:])))
