"""The host's pip settings for an image build: `pip config list` on stdin -> one pip.conf, plus mounts.

Writes the effective settings (files and PIP_* variables, the variables winning) as a [global] section
to the path given, and prints one `--volume=HOST:CONTAINER:ro` per line: the pip.conf itself as
/etc/pip.conf, and every local file or directory a setting names (CA bundle, constraints, find-links,
file:// indexes) at the same path. scripts/images.sh passes these to the build steps, so nothing of
the host's pip configuration ends up in an image.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

# Settings whose values may name local paths (pip's option names, as `pip config list` prints them).
_FILES = "/run/mimo-build"
_PATH_KEYS = {"cert", "client-cert", "constraint", "requirement", "find-links", "index-url", "extra-index-url"}


def parse(lines: list[str]) -> dict[str, str]:
    """`global.cert='/x'` and `:env:.cert='/x'` lines -> {"cert": "/x"}; env entries win."""
    files: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.strip().partition("=")
        if not sep or "." not in name:
            continue
        section, _, key = name.rpartition(".")
        text = ast.literal_eval(value) if value[:1] in "'\"" else value
        if section == ":env:":
            env[key] = text
        elif section in ("global", "install", "download"):
            files[key] = text
    return files | env


def local_paths(settings: dict[str, str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The settings as the build sees them, and (host path, path in the build) of each local path they name.

    Files (CA bundle, constraints) go under /run/mimo-build/, so that they never shadow the image's own
    (apt's ca-certificates rewrites /etc/ssl/certs/ca-certificates.crt); directories keep their paths."""
    inside: dict[str, str] = {}
    found = []
    for key, value in settings.items():
        items = []
        for item in value.split() if key in _PATH_KEYS else [value]:
            path = item.removeprefix("file://").rstrip("/")
            if key.endswith("index-url"):
                path = os.path.dirname(path)  # an index's links reach its parent (../../files/...)
            if path.startswith("/") and os.path.isfile(path):
                target = f"{_FILES}/{key}-{os.path.basename(path)}"
                found.append((os.path.realpath(path), target))
                item = target
            elif path.startswith("/") and os.path.isdir(path):
                found.append((path, path))
            items.append(item)
        inside[key] = " ".join(items)
    return inside, sorted(set(found))


def main(argv: list[str]) -> int:
    settings = parse(sys.stdin.read().splitlines())
    if not settings:
        return 0
    settings, mounts = local_paths(settings)
    out = Path(argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(settings.items())))
    print(f"--volume={out}:/etc/pip.conf:ro")
    for host, inside in mounts:
        print(f"--volume={host}:{inside}:ro")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
