"""`mimo-serve operator`: parse the command line, build the context and settings, run kopf."""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

import kopf
import prometheus_client

from operators.autoscaler import handlers
from operators.autoscaler.autoscale import Context, OperatorConfig

DEFAULT_PEERING = "mimo-autoscaler"


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How this operator process runs next to its peers."""

    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    peering_name: str = DEFAULT_PEERING
    is_standalone: bool = False
    priority: int = 0
    liveness_port: int = 0
    metrics_port: int = 0


def parse_args(argv: Sequence[str]) -> tuple[OperatorConfig, RunOptions, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="mimo-serve operator", description="The MiMoPool autoscaling operator.")
    parser.add_argument("--namespace", action="append", default=[], help="watch this namespace (repeat); none: all")
    parser.add_argument("--prometheus-url", default="http://prometheus-operated.monitoring.svc:9090")
    parser.add_argument("--metrics-port", type=int, default=9100, help="mimo_operator_* metrics; 0: off")
    parser.add_argument("--liveness-port", type=int, default=8080, help="kopf's /healthz; 0: off")
    parser.add_argument("--interval-s", type=float, default=5.0, help="how often each pool is evaluated")
    parser.add_argument("--query-timeout-s", type=float, default=3.0)
    parser.add_argument("--peering", default=DEFAULT_PEERING, help="name of the KopfPeering object shared by replicas")
    parser.add_argument("--standalone", action="store_true", help="no peering (development, single replica)")
    parser.add_argument("--priority", type=int, default=None, help="peering priority; default: random per process")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(list(argv))
    if args.interval_s <= 0 or args.query_timeout_s <= 0:
        parser.error("--interval-s and --query-timeout-s must be positive")
    config = OperatorConfig(
        prometheus_url=args.prometheus_url, interval_s=args.interval_s, query_timeout_s=args.query_timeout_s
    )
    options = RunOptions(
        namespaces=tuple(args.namespace),
        peering_name=args.peering,
        is_standalone=args.standalone,
        # Equal priorities make every peer freeze; distinct ones leave exactly one active.
        priority=args.priority if args.priority is not None else random.randint(1, 2**31 - 1),
        liveness_port=args.liveness_port,
        metrics_port=args.metrics_port,
    )
    return config, options, args


def build_settings(options: RunOptions) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.peering.name = options.peering_name
    settings.peering.standalone = options.is_standalone
    settings.peering.mandatory = not options.is_standalone  # never run unpeered by accident
    settings.peering.priority = options.priority
    settings.posting.level = logging.WARNING  # events come from scaling decisions, not handler logs
    settings.watching.server_timeout = 300
    return settings


async def serve(
    config: OperatorConfig,
    options: RunOptions,
    *,
    login: handlers.LoginFn = kopf.login_via_client,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> None:
    """Run the operator until stopped; tests call this with their own login and flags."""
    registry = kopf.OperatorRegistry()
    handlers.register(registry, interval_s=config.interval_s, login=login)
    liveness = f"http://0.0.0.0:{options.liveness_port}/healthz" if options.liveness_port else None
    await kopf.operator(
        registry=registry,
        settings=build_settings(options),
        memo=kopf.Memo(ctx=Context.build(config)),
        clusterwide=not options.namespaces,
        namespaces=options.namespaces,
        liveness_endpoint=liveness,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


def main(argv: Sequence[str]) -> int:
    """Entry point of `mimo-serve operator`; returns the exit code."""
    config, options, args = parse_args(argv)
    kopf.configure(verbose=args.verbose)
    if options.metrics_port:
        prometheus_client.start_http_server(options.metrics_port)
    try:
        asyncio.run(serve(config, options))
    except KeyboardInterrupt:
        return 130
    return 0
