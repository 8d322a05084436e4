"""SGLang's own `sglang:*` metrics, read from the child's loopback HTTP sidecar and re-served on our /metrics.

In `--grpc-mode` SGLang serves Prometheus metrics only on its HTTP sidecar, bound to the child's `--host`
(loopback here, so that its raw scheduler port and /start_profile stay off the pod network) on
`--grpc-http-sidecar-port`, default `--port + 1` (sglang python/sglang/srt/entrypoints/grpc_server.py). A scrape of
the worker's metrics port reads it and adds its families beside `mimo_worker_*`, so the worker's ServiceMonitor
collects both; `mimo_worker_sglang_metrics_up` says whether this scrape got them.
"""

from __future__ import annotations

import http.client
import logging
import urllib.request
from collections.abc import Iterable, Sequence

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 2.0  # well inside a scrape timeout: a wedged child costs our own metrics at most this
SIDECAR_PORT_FLAGS = ("--grpc-http-sidecar-port", "--metrics-http-port")  # its name since sglang #22500; before
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through HTTP(S)_PROXY


def sidecar_port(child_port: int, extra_args: Sequence[str]) -> int:
    """The port SGLang serves /metrics on in gRPC mode: the sidecar flag if passed through, else `--port + 1`."""
    args = list(extra_args)
    for i, a in enumerate(args):
        name, eq, value = a.partition("=")
        if name in SIDECAR_PORT_FLAGS:
            return int(value if eq else args[i + 1])
    return child_port + 1


def sglang_families(body: str, content_type: str) -> list[Metric]:
    """The `sglang:`/`sglang_` families of one exposition (OpenMetrics, as SGLang writes it, or Prometheus text).

    Other names are dropped so that none can clash with ours.
    """
    parse = parse_openmetrics if content_type.startswith("application/openmetrics-text") else parse_text
    return [m for m in parse(restore_sample_names(body)) if m.name.startswith(("sglang:", "sglang_"))]


def restore_sample_names(body: str) -> str:
    """Give each sample line its family's name back where the writer escaped ':' to '_' in samples only.

    prometheus_client's OpenMetrics writer (0.26 here) keeps `# TYPE sglang:prompt_tokens counter` but writes
    `sglang_prompt_tokens_total ...`, and its parser then reads untyped families. Restored, the series are the
    `sglang:*` names SGLang documents (docs/references/production_metrics.md) and its dashboards use.
    """
    lines, family, escaped = [], "", ""
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            family = line.split(" ", 3)[2]
            escaped = family.replace(":", "_")
        elif escaped != family and line.startswith(escaped):
            line = family + line[len(escaped) :]
        lines.append(line)
    return "\n".join(lines) + "\n"


class ChildMetrics(Collector):
    """A collector in the default registry that reads the child's /metrics at each scrape of ours."""

    def __init__(self, url: str, timeout_s: float = READ_TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._is_failing = False

    def describe(self) -> Iterable[Metric]:
        return []  # no names to reserve: the registry must not read the child when this is registered

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("mimo_worker_sglang_metrics_up", "1 when this scrape read SGLang's own /metrics")
        try:
            with _NO_PROXY.open(self.url, timeout=self.timeout_s) as reply:
                body = reply.read().decode()
                families = sglang_families(body, reply.headers.get("Content-Type", ""))
        except (OSError, http.client.HTTPException, ValueError) as e:  # not up yet, gone, or not parseable
            if not self._is_failing:
                log.warning("cannot read sglang metrics", extra={"url": self.url, "error": repr(e)})
            self._is_failing = True
            up.add_metric([], 0)
            return [up]
        self._is_failing = False
        up.add_metric([], 1)
        return [*families, up]

    def register(self) -> None:
        REGISTRY.register(self)

    def unregister(self) -> None:
        REGISTRY.unregister(self)
