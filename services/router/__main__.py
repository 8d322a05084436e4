"""`mimo-serve router`: flags → settings → the Inference (and Rollout) servers on the shared runtime."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mimo_client.v1 import admin_pb2_grpc, inference_pb2_grpc, rollout_pb2_grpc

from services.common.auth import ApiKey, KeyRing, KeysError, load_keys
from services.common.config import add_server_args, env_default, parse_target, server_settings
from services.common.interceptors import KeyRingInterceptor
from services.common.server import Service, run
from services.router.admission import Admission, AdmissionConfig
from services.router.breaker import CircuitBreaker
from services.router.datasets import DatasetRegistry
from services.router.discovery import make_discovery
from services.router.dispatch import Dispatcher
from services.router.fleet import Fleet
from services.router.http_api import HttpApi
from services.router.kv_events import KvEventFeed, KvEventIndex
from services.router.pipeline import Pipeline
from services.router.policy import POLICIES, make_policy
from services.router.rewards import RewardClient
from services.router.rollout_runs import RolloutRuns, load_dataset, parse_dataset_flag
from services.router.scorers import ScorerPool
from services.router.server import AdminServicer, InferenceServicer, RolloutServicer, retry_advice
from services.router.tokenization import RouterTokenizer
from services.router.wire import dataset_prompts
from services.router.worker_client import WorkerClient
from services.router.workers import HealthPolicy, WorkerPool


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mimo-serve router", description="The public Inference and Rollout APIs.")
    add_server_args(p, "router", "0.0.0.0:50051", 9100)

    def env(flag: str, default: str | None) -> str | None:
        return env_default("router", flag, default)

    p.add_argument("--workers", default=env("workers", ""), help="static workers: grpc://host:port,...")
    p.add_argument("--discovery", choices=["static", "kubernetes"], default=env("discovery", "static"))
    p.add_argument("--namespace", default=env("namespace", "default"), help="kubernetes discovery namespace")
    p.add_argument(
        "--selector", default=env("selector", "app.kubernetes.io/component=worker"), help="pod label selector"
    )
    p.add_argument("--kube-api-url", default=env("kube-api-url", None), help="API server URL (default: in-cluster)")
    p.add_argument("--worker-port", type=int, default=int(env("worker-port", "31000") or 31000))
    p.add_argument(
        "--tokenizer",
        default=env("tokenizer", "127.0.0.1:50052"),
        help="tokenizer service host:port, or a balanced target (dns:///headless-svc:port, ipv4:a:p,b:p)",
    )
    p.add_argument(
        "--verifier",
        default=env("verifier", "127.0.0.1:50053"),
        help="verifier service host:port, or a balanced target (dns:///headless-svc:port, ipv4:a:p,b:p)",
    )
    p.add_argument(
        "--reward-retry-s", type=float, default=60.0, help="how long a reward is retried through a verifier outage"
    )
    p.add_argument("--policy", choices=sorted(POLICIES), default=env("policy", "cache_aware"))
    p.add_argument("--model-name", default=env("model-name", "mimo"), help="the model id clients see")
    p.add_argument("--max-in-flight", type=int, default=int(env("max-in-flight", "1024") or 1024))
    p.add_argument("--max-queue", type=int, default=int(env("max-queue", "1024") or 1024))
    p.add_argument("--queue-timeout-s", type=float, default=float(env("queue-timeout-s", "30") or 30))
    p.add_argument("--max-attempts", type=int, default=3, help="tries per request before the first token")
    p.add_argument("--health-interval-s", type=float, default=2.0)
    p.add_argument("--auth-token", default=env("auth-token", None), help="require `authorization: Bearer TOKEN`")
    p.add_argument(
        "--auth-keys-file",
        type=Path,
        default=env("auth-keys-file", None),
        help="named API keys with optional per-key limits (YAML; see services/common/auth.py)",
    )
    p.add_argument(
        "--tokenizer-timeout-s", type=float, default=60.0, help="how long to wait for the tokenizer at start"
    )
    p.add_argument(
        "--http-listen", default=env("http-listen", "0.0.0.0:8000"), help="OpenAI HTTP API HOST:PORT ('' turns it off)"
    )
    p.add_argument("--no-http", action="store_true", help="serve no OpenAI HTTP API")
    p.add_argument("--tokenizer-cache", type=Path, default=None, help="where fetched tokenizer artifacts are kept")
    p.add_argument(
        "--kv-events",
        action=argparse.BooleanOptionalAction,
        default=(env("kv-events", "false") or "false").lower() in ("1", "true", "yes"),
        help="cache_aware follows the workers' own KV events (SubscribeKvEvents) where they publish them, so "
        "router replicas share one view of every cache; off: each router's guess from what it sent",
    )
    p.add_argument(
        "--dataset",
        action="append",
        default=[],
        help="a named prompt source, NAME=FILE.jsonl[,scorer=HOST:PORT][,alpha=A] (one RolloutPrompt JSON a line)",
    )
    p.add_argument(
        "--state-dir", type=Path, default=env("state-dir", None), help="where datasets keep pass rates (a volume)"
    )
    return p


def key_ring(args: argparse.Namespace) -> KeyRing | None:
    """The API keys: a keys file, or the single --auth-token (a key named "default"); None: no authentication."""
    keys = load_keys(args.auth_keys_file) if args.auth_keys_file else []
    if args.auth_token:
        keys.append(ApiKey("default", args.auth_token))
    return KeyRing(keys) if keys else None


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    settings = server_settings(args, "router")
    try:
        static = [parse_target(w, "--workers") for w in args.workers.split(",") if w.strip()]
        tokenizer_target = parse_target(args.tokenizer, "--tokenizer")
        verifier_target = parse_target(args.verifier, "--verifier")
    except ValueError as e:
        print(f"mimo-serve router: {e}", file=sys.stderr)
        return 2
    try:
        keys = key_ring(args)
    except KeysError as e:
        print(f"mimo-serve router: {e}", file=sys.stderr)
        return 2
    try:
        datasets = [parse_dataset_flag(v) for v in args.dataset]
    except ValueError as e:
        print(f"mimo-serve router: {e}", file=sys.stderr)
        return 2
    if args.discovery == "static" and not static:
        print("mimo-serve router: --workers: give at least one worker, or --discovery kubernetes", file=sys.stderr)
        return 2

    async def build() -> Service:
        pool = WorkerPool(HealthPolicy(interval_s=args.health_interval_s), CircuitBreaker(), WorkerClient)
        feed = KvEventFeed(KvEventIndex()) if args.kv_events else None
        policy = make_policy(args.policy, truth=feed.index if feed else None)
        pool.on_removed.append(policy.forget)
        if feed is not None:
            pool.on_added.append(feed.add)
            pool.on_removed.append(feed.remove)
        tokenizer = RouterTokenizer(tokenizer_target, args.tokenizer_cache)
        pipeline = Pipeline(
            Dispatcher(pool, policy, args.max_attempts, max_wait_s=args.queue_timeout_s),
            Admission(AdmissionConfig(args.max_in_flight, args.max_queue, args.queue_timeout_s)),
            lambda: tokenizer.snapshot,
            args.model_name,
        )
        fleet = Fleet(pool)
        discovery = make_discovery(args, pool, static)
        rewards = RewardClient(verifier_target, retry_s=args.reward_retry_s)
        runs = RolloutRuns(ScorerPool(rewards), dataset_scorers={f.name: f.scorer for f in datasets})
        http_on = bool(args.http_listen) and not args.no_http
        http = HttpApi(pipeline, lambda: tokenizer.snapshot, args.http_listen, keys, settings.grace_s)

        def register(server) -> None:
            inference_pb2_grpc.add_InferenceServicer_to_server(InferenceServicer(pipeline), server)
            rollout_pb2_grpc.add_RolloutServicer_to_server(RolloutServicer(pipeline, rewards, runs, fleet), server)
            admin_pb2_grpc.add_AdminServicer_to_server(AdminServicer(fleet), server)

        async def on_start() -> None:
            await tokenizer.start(args.tokenizer_timeout_s)
            vocab = tokenizer.snapshot.vocab_size
            runs.datasets = DatasetRegistry(
                [load_dataset(f, dataset_prompts(str(f.path), vocab), args.state_dir) for f in datasets]
            )
            await discovery.start()
            pool.start()
            if http_on:
                await http.start()

        async def on_stop() -> None:
            await discovery.stop()
            await fleet.stop()
            await pool.stop()
            if feed is not None:
                await feed.stop()
            await tokenizer.stop()
            await rewards.close()
            await runs.close()

        return Service(
            register=register,
            names=["mimo.v1.Inference", "mimo.v1.Rollout", "mimo.v1.Admin"],
            on_start=[on_start],
            on_drain=[http.drain] if http_on else [],
            on_stop=[http.stop, on_stop] if http_on else [on_stop],
            interceptors=[KeyRingInterceptor(keys, retry_advice)] if keys else [],
            readiness=pool.report_routable,
        )

    return run(settings, build)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
