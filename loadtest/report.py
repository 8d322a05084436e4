"""The sweep's report: PNG plots, one self-contained HTML page (plots inlined as data URIs) and a JSON of figures."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from loadtest.goodput import RateResult


@dataclass(frozen=True, slots=True)
class ReportPaths:
    json: Path
    html: Path
    pngs: tuple[Path, ...]


def _latency_plot(results: Sequence[RateResult], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    rates = [r.offered_rps for r in results]
    for ax, (title, key) in zip(axes, (("TTFT", "ttft_ms"), ("ITL", "itl_ms"), ("end to end", "e2e_ms")), strict=True):
        for q, style in (("p50", "o-"), ("p90", "s--"), ("p99", "^:")):
            ax.plot(rates, [getattr(r, key)[q] for r in results], style, label=q)
        ax.set(title=f"{title} vs offered rate", xlabel="offered requests/s", ylabel="ms")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _throughput_plot(results: Sequence[RateResult], best: RateResult | None, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    rates = [r.offered_rps for r in results]
    ax.plot(rates, rates, color="0.7", linestyle=":", label="offered")
    ax.plot(rates, [r.throughput_rps for r in results], "o-", label="throughput")
    ax.plot(rates, [r.goodput_rps for r in results], "s-", label="goodput (met every SLO bound)")
    if best is not None:
        ax.axvline(best.offered_rps, color="green", alpha=0.5, label=f"sustainable {best.offered_rps:.3g}/s")
    ax.set(title="Throughput and goodput", xlabel="offered requests/s", ylabel="requests/s")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _cdf_plot(results: Sequence[RateResult], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for ax, key in zip(axes, ("ttft", "itl"), strict=True):
        for r in results:
            points = r.cdf_ms[key]
            if points:
                ax.plot(points, [(i + 1) / len(points) for i in range(len(points))], label=f"{r.offered_rps:.3g}/s")
        ax.set(title=f"{key.upper()} CDF", xlabel="ms", ylabel="fraction of samples", xscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _table(results: Sequence[RateResult]) -> str:
    head = ["offered/s", "throughput/s", "goodput/s", "errors", "TTFT p50/p90/p99 ms", "ITL p90 ms",
            "E2E p90 ms", "workers: running/waiting/KV/MTP", "sustainable"]  # fmt: skip
    rows = []
    for r in results:
        w = r.workers
        view = "/".join(_fmt(w.get(k, math.nan)) for k in ("running_mean", "waiting_mean", "kv_usage_mean"))
        view += f"/{_fmt(w.get('mtp_accept_rate', math.nan))}"
        cells = [_fmt(r.offered_rps), _fmt(r.throughput_rps), _fmt(r.goodput_rps), f"{r.num_errors}/{r.num_requests}",
                 "/".join(_fmt(r.ttft_ms[q]) for q in ("p50", "p90", "p99")), _fmt(r.itl_ms["p90"]),
                 _fmt(r.e2e_ms["p90"]), view, "yes" if r.is_sustainable else "no"]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"


def _page(
    results: Sequence[RateResult], best: RateResult | None, pngs: Sequence[Path], settings: dict[str, Any]
) -> str:
    verdict = f"Sustainable rate: {best.offered_rps:.3g} requests/s" if best else "No sustainable rate found"
    images = "".join(
        f'<figure><img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        f"<figcaption>{p.stem}</figcaption></figure>"
        for p in pngs
    )
    flags = html.escape(json.dumps(settings, indent=1, default=str))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>MiMo Serve load test sweep</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:3px 8px;text-align:right}}img{{max-width:100%}}figure{{margin:1em 0}}</style></head><body>
<h1>MiMo Serve load test sweep</h1><p id="verdict"><b>{html.escape(verdict)}</b></p>{_table(results)}{images}
<details><summary>settings</summary><pre>{flags}</pre></details></body></html>"""


def write(out: Path, results: Sequence[RateResult], best: RateResult | None, settings: dict[str, Any]) -> ReportPaths:
    """sweep.json, latency.png, throughput.png, cdf.png and report.html (which needs nothing else) under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    pngs = (out / "latency.png", out / "throughput.png", out / "cdf.png")
    _latency_plot(results, pngs[0])
    _throughput_plot(results, best, pngs[1])
    _cdf_plot(results, pngs[2])
    data = {
        "settings": settings,
        "sustainable_rps": best.offered_rps if best else None,
        "rates": [r.as_json() for r in results],
    }
    (out / "sweep.json").write_text(json.dumps(data, indent=1, default=str))
    (out / "report.html").write_text(_page(results, best, pngs, settings))
    return ReportPaths(out / "sweep.json", out / "report.html", pngs)
