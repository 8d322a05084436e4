"""Everything generated, from one place: `make generate` writes it, `make check-generated` fails when it is stale.

- sdk/python/mimo_client/v1/: the mimo.v1 stubs (scripts/gen_proto.py, from protos/mimo/v1);
- operators/autoscaler/crd.yaml: the MiMoPool CRD (operators/autoscaler/crd.py, from the spec defaults);
- helm/mimo-serve/crds/: that CRD, and kopf's peering CRDs from operators/autoscaler/peering.yaml;
- helm/mimo-serve/dashboards/*.json: the Grafana dashboards (helm/mimo-serve/dashboards/build.py).

`--check` builds everything in memory and compares it with the files on disk (so it works on a dirty tree too,
and never writes); it names every stale file and exits 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "mimo-serve"
STUBS = ROOT / "sdk" / "python" / "mimo_client" / "v1"
PEERING_HEADER = (
    "# kopf's peering CRDs (kopf.dev), copied from operators/autoscaler/peering.yaml; tests/helm checks they match.\n"
    "# Operator replicas that share a KopfPeering see each other: the highest --priority runs, the others pause.\n"
)


def _load(name: str, path: Path):  # a script beside its helper modules (scripts/, helm/.../dashboards/)
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(path.parent))


def stubs() -> dict[Path, bytes]:
    gen_proto = _load("gen_proto", ROOT / "scripts" / "gen_proto.py")
    with tempfile.TemporaryDirectory() as tmp:
        gen_proto.generate(Path(tmp))
        return {STUBS / p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}


def crds() -> dict[Path, bytes]:
    sys.path.insert(0, str(ROOT))
    from operators.autoscaler.crd import render

    crd = render().encode()
    peering = (ROOT / "operators" / "autoscaler" / "peering.yaml").read_text()
    documents = [
        d for d in peering.split("\n---\n") if (yaml.safe_load(d) or {}).get("kind") == "CustomResourceDefinition"
    ]
    body = "\n---\n".join(d[d.index("apiVersion:") :] for d in documents)  # without peering.yaml's own header
    return {
        ROOT / "operators" / "autoscaler" / "crd.yaml": crd,
        CHART / "crds" / "mimopools.serve.mimo.dev.yaml": crd,
        CHART / "crds" / "kopf-peering.yaml": (PEERING_HEADER + body.rstrip("\n") + "\n").encode(),
    }


def dashboards() -> dict[Path, bytes]:
    build = _load("dashboards_build", CHART / "dashboards" / "build.py")
    return {CHART / "dashboards" / name: build.render(body).encode() for name, body in build.build().items()}


GENERATORS: dict[str, Callable[[], dict[Path, bytes]]] = {"stubs": stubs, "crds": crds, "dashboards": dashboards}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the files on disk; write nothing")
    args = parser.parse_args()
    files = {path: data for generate in GENERATORS.values() for path, data in generate().items()}
    stale = sorted(str(p.relative_to(ROOT)) for p, data in files.items() if not p.is_file() or p.read_bytes() != data)
    extra = sorted(str(p.relative_to(ROOT)) for p in STUBS.glob("*.py*") if p.is_file() and p not in files)
    if args.check:
        for name in stale + extra:
            print(f"stale generated file: {name}", file=sys.stderr)
        if stale or extra:
            print("run `make generate` and commit the result", file=sys.stderr)
            return 1
        print(f"{len(files)} generated files are up to date")
        return 0
    for name in extra:
        (ROOT / name).unlink()
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"wrote {len(stale)} of {len(files)} generated files" + (f", removed {len(extra)}" if extra else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
