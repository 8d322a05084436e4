"""The SDK stays light: importing it pulls in neither torch nor the server code."""

from __future__ import annotations

import json
import subprocess
import sys


def test_import_pulls_no_torch_and_no_services() -> None:
    code = (
        "import json, sys\n"
        "from mimo_client import MimoClient, AsyncMimoClient\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'services', 'tqdm'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd="/")
    assert json.loads(out.stdout) == []
