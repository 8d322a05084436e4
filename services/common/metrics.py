"""The /metrics endpoint and the per-service gRPC request metrics."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Histogram, start_http_server

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass(frozen=True, slots=True)
class RpcMetrics:
    """Request counter and latency histogram of one service, labelled by method and status code."""

    requests: Counter
    latency: Histogram


_rpc_metrics: dict[str, RpcMetrics] = {}
_lock = threading.Lock()


def rpc_metrics(service: str) -> RpcMetrics:
    """The `mimo_<service>_requests_total` / `_request_duration_seconds` pair (created once per process)."""
    with _lock:
        if service not in _rpc_metrics:
            _rpc_metrics[service] = RpcMetrics(
                requests=Counter(f"mimo_{service}_requests", "gRPC requests handled", ["method", "code"]),
                latency=Histogram(
                    f"mimo_{service}_request_duration_seconds",
                    "gRPC request latency (streams: until the last message)",
                    ["method", "code"],
                    buckets=LATENCY_BUCKETS_S,
                ),
            )
        return _rpc_metrics[service]


class MetricsServer:
    """prometheus_client's HTTP endpoint in a thread, stoppable."""

    def __init__(self, host: str, port: int) -> None:
        self._server: WSGIServer
        self._server, self._thread = start_http_server(port, addr=host)
        self.port: int = self._server.server_port
        log.info("metrics endpoint up", extra={"url": f"http://{host}:{self.port}/metrics"})

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
