"""Settings for every server, from command-line flags with environment fallbacks read at parse time."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass


def env_default(service: str, flag: str, default: str | None) -> str | None:
    """The value of MIMO_<SERVICE>_<FLAG> (or MIMO_<FLAG>) if set, else `default`."""
    key = flag.upper().replace("-", "_")
    return os.environ.get(f"MIMO_{service.upper()}_{key}", os.environ.get(f"MIMO_{key}", default))


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How a gRPC server listens, exports metrics and drains."""

    service: str
    listen: str = "127.0.0.1:50051"
    metrics_port: int | None = None  # None: no /metrics endpoint; 0: any free port
    metrics_host: str = "0.0.0.0"
    grace_s: float = 10.0  # time in-flight calls get to finish after SIGTERM
    max_message_bytes: int = 64 * 1024 * 1024
    log_level: str = "INFO"
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def has_tls(self) -> bool:
        return bool(self.tls_cert and self.tls_key)


def add_server_args(parser: argparse.ArgumentParser, service: str, default_listen: str, default_metrics: int) -> None:
    """Add the flags every server takes: --listen, --metrics-port, --grace-s, --log-level, TLS."""

    def env(flag: str, default: str | None) -> str | None:
        return env_default(service, flag, default)

    g = parser.add_argument_group("server")
    g.add_argument("--listen", default=env("listen", default_listen), help="HOST:PORT to serve gRPC on")
    g.add_argument(
        "--metrics-port",
        type=int,
        default=int(env("metrics-port", str(default_metrics)) or -1),
        help="port of the Prometheus /metrics endpoint (-1 disables, 0 picks a free port)",
    )
    g.add_argument("--metrics-host", default=env("metrics-host", "0.0.0.0"))
    g.add_argument("--grace-s", type=float, default=float(env("grace-s", "10") or 10), help="drain grace period")
    g.add_argument("--max-message-mb", type=int, default=int(env("max-message-mb", "64") or 64))
    g.add_argument("--log-level", default=env("log-level", "INFO"))
    g.add_argument("--tls-cert", default=env("tls-cert", None), help="PEM certificate; TLS when set with --tls-key")
    g.add_argument("--tls-key", default=env("tls-key", None))


def server_settings(args: argparse.Namespace, service: str) -> ServerSettings:
    """Build ServerSettings from flags added by add_server_args."""
    return ServerSettings(
        service=service,
        listen=args.listen,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        metrics_host=args.metrics_host,
        grace_s=args.grace_s,
        max_message_bytes=args.max_message_mb * 1024 * 1024,
        log_level=args.log_level,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )


def parse_target(value: str, field: str = "address") -> str:
    """`grpc://host:port` or `host:port` → `host:port`; ValueError naming `field` otherwise."""
    target = value.removeprefix("grpc://").strip().rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{field}: expected host:port or grpc://host:port, got {value!r}")
    return target
