"""Typed exceptions carrying the gRPC status code and the server's message."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import grpc

from mimo_client._status import STATUS_DETAILS_KEY, retry_info_delay_s

Metadata = tuple[tuple[str, str | bytes], ...]

# "retry after 250ms", "retry after 0.5 s", "retry-after-ms=250", "retry_after_s: 2"
_RETRY_AFTER = re.compile(
    r"retry[-_ ]after(?:[-_ ](?P<key_unit>ms|s))?\W{0,3}(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>ms|milli\w*|s\b|sec\w*)?",
    re.IGNORECASE,
)


class MimoError(Exception):
    """A failed call: `code` is the gRPC status code, `message` the server's (or the client's) explanation."""

    def __init__(self, code: grpc.StatusCode, message: str, metadata: Metadata = ()) -> None:
        super().__init__(code, message, metadata)
        self.code = code
        self.message = message
        self.metadata = metadata  # trailing metadata of the failed call

    @property
    def code_name(self) -> str:
        return str(self.code.name)

    def __str__(self) -> str:
        return f"{self.code_name}: {self.message}"


class InvalidArgument(MimoError):
    """The request is wrong; the message names the field. Never retried."""


class ResourceExhausted(MimoError):
    """Admission control refused the call; `retry_after_s` is the server's advice, when it gave one."""

    def __init__(self, code: grpc.StatusCode, message: str, metadata: Metadata = ()) -> None:
        super().__init__(code, message, metadata)
        self.retry_after_s = retry_after_s(message, metadata)


class Unavailable(MimoError):
    """No server (or no worker behind it) could take the call."""


class DeadlineExceeded(MimoError):
    """The call's deadline passed."""


class Unauthenticated(MimoError):
    """Missing or wrong bearer token."""


class NotFound(MimoError):
    """An unknown model or resource."""


class Cancelled(MimoError):
    """The call was cancelled."""


class Internal(MimoError):
    """A server bug or an unexpected failure on the server side."""


class FailedPrecondition(MimoError):
    """The system is not in the state the call needs (e.g. the fleet serves an older weight version)."""


class Aborted(MimoError):
    """A conflicting operation runs (e.g. another weight update)."""


_BY_CODE: dict[grpc.StatusCode, type[MimoError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
}


def error_for(code: grpc.StatusCode, message: str, metadata: Metadata = ()) -> MimoError:
    """The most specific `MimoError` subclass for `code`."""
    return _BY_CODE.get(code, MimoError)(code, message, metadata)


def from_rpc_error(error: grpc.RpcError) -> MimoError:
    """Turn a sync or asyncio grpc error into a typed `MimoError`, keeping code, message and trailing metadata."""
    call: Any = error
    code = call.code() if hasattr(call, "code") else grpc.StatusCode.UNKNOWN
    message = (call.details() if hasattr(call, "details") else None) or str(error)
    trailing = call.trailing_metadata() if hasattr(call, "trailing_metadata") else None
    return error_for(code or grpc.StatusCode.UNKNOWN, message, _metadata_tuple(trailing))


def retry_after_s(message: str, metadata: Metadata = ()) -> float | None:
    """The server's retry advice, standard forms first.

    `google.rpc.RetryInfo` in the `grpc-status-details-bin` trailer, then `grpc-retry-pushback-ms` (gRPC's
    retry design, A6; a negative value is ignored), then MiMo's older `retry-after-ms` trailer, then a
    "retry after ..." phrase in the message.
    """
    trailers = {key.lower(): value for key, value in metadata}
    details = trailers.get(STATUS_DETAILS_KEY)
    if isinstance(details, bytes) and (delay := retry_info_delay_s(details)) is not None:
        return delay
    for key in ("grpc-retry-pushback-ms", "retry-after-ms"):
        if (ms := _milliseconds(trailers.get(key))) is not None:
            return ms / 1e3
    match = _RETRY_AFTER.search(message)
    if match is None:
        return None
    unit = (match.group("key_unit") or match.group("unit") or "s").lower()
    return float(match.group("value")) / (1e3 if unit.startswith("m") else 1.0)


def _milliseconds(value: str | bytes | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.decode() if isinstance(value, bytes) else value)
    except (UnicodeDecodeError, ValueError):
        return None
    return number if number >= 0 else None


def _metadata_tuple(metadata: Iterable[Any] | None) -> Metadata:
    if not metadata:
        return ()
    return tuple((str(item[0]), item[1]) for item in metadata)
