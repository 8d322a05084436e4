"""kopf handlers for MiMoPool, registered on an explicit registry built in main (nothing at import time)."""

from __future__ import annotations

import datetime
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from operators.autoscaler import autoscale, metrics, resources
from operators.autoscaler.autoscale import Context
from operators.autoscaler.scaling import Decision
from operators.autoscaler.spec import GROUP, PLURAL, VERSION, SpecError, parse_pool
from operators.autoscaler.status import Tick, build_status, changed_fields

LoginFn = Callable[..., kopf.ConnectionInfo | Awaitable[kopf.ConnectionInfo | None] | None]


def register(registry: kopf.OperatorRegistry, *, interval_s: float, login: LoginFn) -> None:
    """Attach every handler to `registry`; `login` yields the credentials for kopf and for our own calls."""

    async def login_and_share(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
        info = login(**kwargs)
        info = await info if inspect.isawaitable(info) else info
        if info is not None:
            _context(memo).kube.use(info)
        return info

    resource = (GROUP, VERSION, PLURAL)
    kopf.on.login(registry=registry)(login_and_share)
    kopf.on.cleanup(registry=registry)(close_clients)
    for on_change in (kopf.on.create, kopf.on.update, kopf.on.resume):
        on_change(*resource, registry=registry, id="apply_workload")(apply_workload)
    # A failed tick (API server hiccup) is retried at the next interval, not after kopf's 60 s default.
    timer = kopf.timer(*resource, registry=registry, interval=interval_s, backoff=interval_s, id="reconcile_replicas")
    timer(reconcile_replicas)
    kopf.on.delete(*resource, registry=registry, optional=True)(forget_pool)


async def apply_workload(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Create or update the worker Deployment and Service; seed spec.replicas and status.selector."""
    started = time.perf_counter()
    try:
        pool = parse_pool(body)
    except SpecError as exc:
        raise kopf.PermanentError(str(exc)) from exc
    replicas = await autoscale.ensure_workload(_context(memo), pool)
    if pool.replicas is None:
        patch.spec["replicas"] = replicas
    patch.status["selector"] = resources.label_selector(pool)
    metrics.RECONCILE_SECONDS.labels("apply_workload").observe(time.perf_counter() - started)


async def reconcile_replicas(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """Every interval: query Prometheus, decide, scale, and write the status and an event on change."""
    started = time.perf_counter()
    try:
        pool = parse_pool(body)
    except SpecError as exc:
        _post_invalid_spec(body, status, patch, str(exc))
        return
    if status.get("invalidSpec"):
        patch.status["invalidSpec"] = None  # fixed since
    tick = await autoscale.evaluate(_context(memo), pool)
    _record_metrics(tick)
    _post_events(body, status, tick, logger)
    new_status = build_status(tick, resources.label_selector(pool), status, _now_iso())
    patch.status.update(changed_fields(new_status, status))
    metrics.RECONCILE_SECONDS.labels("reconcile_replicas").observe(time.perf_counter() - started)


async def forget_pool(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Drop the in-memory history; the Deployment and Service go with the pool (ownerReferences)."""
    autoscale.forget(_context(memo), namespace or "", name)
    metrics.forget_pool(namespace or "", name)


async def close_clients(memo: kopf.Memo, **_: Any) -> None:
    await _context(memo).close()


def _context(memo: kopf.Memo) -> Context:
    ctx = memo.get("ctx")
    if not isinstance(ctx, Context):
        raise RuntimeError("the operator was started without its Context in kopf.Memo (see main.serve)")
    return ctx


def _record_metrics(tick: Tick) -> None:
    pool, decision = tick.pool, tick.decision
    labels = (pool.namespace, pool.name)
    metrics.DESIRED_REPLICAS.labels(*labels).set(decision.desired_replicas)
    metrics.CURRENT_REPLICAS.labels(*labels).set(decision.current_replicas)
    if decision.delta:
        metrics.SCALING_DECISIONS.labels(*labels, "up" if decision.delta > 0 else "down").inc()
    if tick.readings.errors:
        metrics.PROMETHEUS_QUERY_ERRORS.labels(*labels).inc(len(tick.readings.errors))
    for metric, value in zip(pool.scaling.metrics, tick.readings.values, strict=False):
        if value is not None:
            metrics.METRIC_VALUE.labels(*labels, metric.name).set(value)


def _post_events(body: kopf.Body, status: kopf.Status, tick: Tick, logger: kopf.Logger) -> None:
    decision = tick.decision
    if decision.delta:
        reason = "ScaledUp" if decision.delta > 0 else "ScaledDown"
        kopf.event(body, type="Normal", reason=reason, message=_scaling_message(decision))
        logger.info("%s: %s", reason, _scaling_message(decision))
    was_missing = _condition_status(status, "MetricsUnavailable")
    if tick.readings.errors and not was_missing:
        message = "; ".join(tick.readings.errors) + f" (holding {decision.desired_replicas} replicas)"
        kopf.event(body, type="Warning", reason="MetricsUnavailable", message=message[:1000])
        logger.warning("metrics unavailable: %s", message)


def _scaling_message(decision: Decision) -> str:
    return f"{decision.current_replicas} -> {decision.desired_replicas}: {decision.reason}"


def _post_invalid_spec(body: kopf.Body, status: kopf.Status, patch: kopf.Patch, message: str) -> None:
    if status.get("invalidSpec") != message:
        kopf.event(body, type="Warning", reason="InvalidSpec", message=message)
        patch.status["invalidSpec"] = message


def _condition_status(status: kopf.Status, kind: str) -> bool:
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == kind:
            return bool(cond.get("status") == "True")
    return False


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
