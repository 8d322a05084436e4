"""A locust User over gRPC: every unary call and stream reported to locust's statistics, TTFT and ITL for streams.

Importing this module imports locust (which monkey-patches the process for gevent) and switches grpcio to
gevent, as locust's gRPC example does: import it only in a locust process, never in pytest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User
from locust.event import EventHook
from locust.exception import LocustError

from loadtest.slo import CALL_TYPE, STREAM_TYPE, CheckFailed

# Before any channel exists: grpcio's completion queues must yield to gevent instead of blocking the hub.
grpc_gevent.init_gevent()

Response = TypeVar("Response")
Message = TypeVar("Message")


class GrpcStatusError(Exception):
    """A call that ended with a non-OK gRPC status; its text starts with the code (what locust groups errors by)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details[:160]}")
        self.code = code


def status_error(e: grpc.RpcError) -> GrpcStatusError:
    code = e.code() if isinstance(e, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = e.details() if isinstance(e, grpc.Call) else str(e)
    return GrpcStatusError(code, details or "")


class RpcReporter:
    """Times gRPC calls and fires one locust request event per call, and per TTFT/ITL for streams."""

    def __init__(self, request_event: EventHook, timeout_s: float) -> None:
        self._fire = request_event.fire
        self.timeout_s = timeout_s

    def report(
        self, name: str, elapsed_s: float, length: int = 0, error: Exception | None = None, kind: str = CALL_TYPE
    ) -> None:
        """One row sample: `name` took `elapsed_s`; `length` is the row's size column (tokens, samples)."""
        self._fire(
            request_type=kind,
            name=name,
            response_time=elapsed_s * 1000.0,
            response_length=length,
            exception=error,
            context={},
        )

    def unary(
        self,
        name: str,
        rpc: Callable[..., Response],
        request: Any,
        size: Callable[[Response], int] = lambda _: 0,
        check: Callable[[Response], None] | None = None,
    ) -> Response | None:
        """Calls `rpc(request)`; reports its latency, or the gRPC code / failed check. None when it failed."""
        started = time.perf_counter()
        try:
            response = rpc(request, timeout=self.timeout_s)
            if check is not None:
                check(response)
        except grpc.RpcError as e:
            self.report(name, time.perf_counter() - started, error=status_error(e))
            return None
        except CheckFailed as e:
            self.report(name, time.perf_counter() - started, error=e)
            return None
        self.report(name, time.perf_counter() - started, size(response))
        return response

    def stream(
        self,
        name: str,
        rpc: Callable[..., Iterable[Message]],
        request: Any,
        tokens: Callable[[Message], int],
        check: Callable[[Sequence[Message]], None] | None = None,
        first_name: str = "ttft",
        gap_name: str | None = "itl",
    ) -> list[Message] | None:
        """Reads a server stream; reports `name <first_name>` (time to the first message with tokens), `name
        <gap_name>` (each gap between messages with tokens), `name tpot` (mean time per token after the first)
        and `name` itself (the whole stream, size = tokens). Returns the messages, or None when it failed."""
        started = time.perf_counter()
        messages: list[Message] = []
        num_tokens, first_at, last_at = 0, 0.0, 0.0
        try:
            for message in rpc(request, timeout=self.timeout_s):
                now = time.perf_counter()
                messages.append(message)
                count = tokens(message)
                if count <= 0:
                    continue
                if num_tokens == 0:
                    first_at = now
                    self.report(f"{name} {first_name}", now - started, count, kind=STREAM_TYPE)
                elif gap_name is not None:
                    self.report(f"{name} {gap_name}", now - last_at, count, kind=STREAM_TYPE)
                num_tokens += count
                last_at = now
            if check is not None:
                check(messages)
        except grpc.RpcError as e:
            self.report(name, time.perf_counter() - started, num_tokens, status_error(e))
            return None
        except CheckFailed as e:
            self.report(name, time.perf_counter() - started, num_tokens, e)
            return None
        if gap_name is not None and num_tokens > 1:
            self.report(f"{name} tpot", (last_at - first_at) / (num_tokens - 1), num_tokens, kind=STREAM_TYPE)
        self.report(name, time.perf_counter() - started, num_tokens)
        return messages


class GrpcUser(User):
    """A locust user with gRPC channels (one connection each, not shared with other users) and a reporter.

    Subclasses set `host` (HOST:PORT), open channels with `channel(target)` and call RPCs through
    `self.rpc.unary(...)` / `self.rpc.stream(...)`.
    """

    abstract = True
    timeout_s: float = 60.0

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        if not self.host:
            raise LocustError("GrpcUser needs a host: HOST:PORT of the gRPC server")
        self._channels: list[grpc.Channel] = []
        self.rpc = RpcReporter(environment.events.request, self.timeout_s)

    def channel(self, target: str) -> grpc.Channel:
        """A plaintext channel to `target` with its own connection, closed when the user stops."""
        channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        self._channels.append(channel)
        return channel

    def on_stop(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()
