"""The sweep's report: JSON, three PNGs and one self-contained HTML page, rendered in headless Chromium.

Chromium is Debian's `chromium` package (scripts/setup.sh installs it); the page is loaded from a file with
networking off, so everything it shows must be inside it. The screenshot's pixels must show the plots' lines.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from loadtest import report
from loadtest.goodput import Outcome, SloSpec, summarise

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/setup.sh)")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
)  # fmt: skip


def results():
    """Three rates with latencies that grow with the load (seeded), the middle and top ones breaking the SLO."""
    rng = random.Random(5)
    out = []
    for rate in (2.0, 4.0, 8.0):
        load = rate / 8
        outcomes = []
        for i in range(int(rate * 10)):
            ttft = rng.expovariate(1 / (0.05 + 0.5 * load**3))
            gaps = tuple(rng.expovariate(50) for _ in range(19))
            outcomes.append(Outcome(i / rate, ttft, ttft + sum(gaps), gaps, 20))
        out.append(summarise(rate, 10.0, outcomes, SloSpec(max_ttft_ms=200), 0.9, 0.01, {"running_mean": rate}))
    return out


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"  # a fresh one every run
    cmd = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def test_the_report_renders_its_verdict_table_and_plots_in_headless_chromium(tmp_path):
    rates = results()
    best = max((r for r in rates if r.is_sustainable), key=lambda r: r.offered_rps)
    paths = report.write(tmp_path / "out", rates, best, {"mix": "mimo-math"})
    data = json.loads(paths.json.read_text())
    assert data["sustainable_rps"] == best.offered_rps and len(data["rates"]) == 3
    assert [p.name for p in paths.pngs] == ["latency.png", "throughput.png", "cdf.png"]

    html_only = tmp_path / "alone"  # the page alone, without the PNG files next to it
    html_only.mkdir()
    page = html_only / "report.html"
    shutil.copy(paths.html, page)
    dom = chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    assert f"Sustainable rate: {best.offered_rps:.3g} requests/s" in dom
    assert dom.count("<img") == 3 and dom.count('src="data:image/png;base64,') == 3
    assert dom.count("<tr>") == 4  # a header and a row per rate

    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,2400", page.as_uri())
    pixels = matplotlib.image.imread(shot)[:, :, :3]
    blue = np.array([0x1F, 0x77, 0xB4]) / 255  # matplotlib's first line colour
    orange = np.array([0xFF, 0x7F, 0x0E]) / 255  # its second
    is_blue = (np.abs(pixels - blue) < 0.08).all(axis=2)
    is_orange = (np.abs(pixels - orange) < 0.08).all(axis=2)
    assert is_blue.sum() > 2000 and is_orange.sum() > 1000, (is_blue.sum(), is_orange.sum())
    rows_with_lines = np.flatnonzero(is_blue.any(axis=1))
    assert rows_with_lines.max() - rows_with_lines.min() > 800  # lines in the plots down the page, not in one place
