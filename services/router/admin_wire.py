"""`mimo.v1.Admin` protos ↔ the fleet's domain types (fleet.py), with the input checks."""

from __future__ import annotations

import math

from mimo_client.v1 import admin_pb2

from services.router.domain import InvalidRequest
from services.router.fleet import DEFAULT_TIMEOUT_S, FleetUpdate, FleetVersions
from services.router.wire import MAX_VERSION_CHARS

MAX_PATH_CHARS = 4096


def update_args(request: admin_pb2.FleetUpdateRequest) -> tuple[str, str, bool, float]:
    """(model_path, weight_version, abort_running, timeout_s), or InvalidRequest naming the field."""
    if not request.model_path or len(request.model_path) > MAX_PATH_CHARS:
        raise InvalidRequest("model_path", f"give a checkpoint directory (at most {MAX_PATH_CHARS} characters)")
    if not request.weight_version or len(request.weight_version) > MAX_VERSION_CHARS:
        raise InvalidRequest("weight_version", f"required, at most {MAX_VERSION_CHARS} characters")
    timeout = request.timeout_s
    if not math.isfinite(timeout) or not 0 <= timeout <= DEFAULT_TIMEOUT_S:
        raise InvalidRequest("timeout_s", f"must be in [0, {DEFAULT_TIMEOUT_S:g}] seconds (0: {DEFAULT_TIMEOUT_S:g})")
    return request.model_path, request.weight_version, request.abort_running, timeout or DEFAULT_TIMEOUT_S


def update_pb(result: FleetUpdate) -> admin_pb2.FleetUpdateResponse:
    return admin_pb2.FleetUpdateResponse(
        weight_version=result.weight_version,
        workers=[
            admin_pb2.WorkerUpdate(
                worker=w.worker,
                ok=w.ok,
                weight_version=w.weight_version,
                load_s=w.load_s,
                error=w.error,
                num_aborted=w.num_aborted,
            )
            for w in result.workers
        ],
        num_failed=len(result.failed),
        wall_s=result.wall_s,
        num_rollouts_waited=result.rollouts_waited,
    )


def versions_pb(v: FleetVersions) -> admin_pb2.FleetVersions:
    return admin_pb2.FleetVersions(
        weight_version=v.weight_version,
        model_path=v.model_path,
        is_updating=v.is_updating,
        workers=[
            admin_pb2.WorkerVersion(
                worker=w.worker, weight_version=w.weight_version, state=w.state, routable=w.routable, reason=w.reason
            )
            for w in v.workers
        ],
    )
