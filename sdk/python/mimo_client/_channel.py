"""Client settings and channel opening, shared by the sync and asyncio clients."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from mimo_client._calls import CallSpec
from mimo_client.retry import Attempts, RetryPolicy
from mimo_client.v1 import admin_pb2_grpc, inference_pb2_grpc, rollout_pb2_grpc, tokenizer_pb2_grpc, verifier_pb2_grpc

USER_AGENT = "mimo-client/0.1.0"


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Everything a client needs besides its channels."""

    target: str
    tokenizer_target: str | None = None  # None: the main target serves mimo.v1.Tokenizer too
    verifier_target: str | None = None  # None: the main target serves mimo.v1.Verifier too
    tls: bool = False
    root_certificates: bytes | str | None = None  # PEM bytes or a file path; None: the system roots
    token: str | None = None  # sent as `authorization: Bearer <token>`
    timeout_s: float | None = 300.0  # default deadline of unary calls
    stream_timeout_s: float | None = None  # default deadline of streams and rollouts (None: none)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    channel_options: tuple[tuple[str, Any], ...] = ()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def timeout_for(self, timeout_s: float | None, *, is_stream: bool) -> float | None:
        """A call's deadline: its own `timeout_s`, else the client default; `math.inf` means none."""
        if timeout_s is None:
            timeout_s = self.stream_timeout_s if is_stream else self.timeout_s
        if timeout_s is not None and math.isinf(timeout_s):
            return None
        return timeout_s

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not self.tls:
            return None
        roots = self.root_certificates
        if isinstance(roots, str):
            roots = Path(roots).read_bytes()
        return grpc.ssl_channel_credentials(root_certificates=roots)


def open_channels(settings: ClientSettings, grpc_module: Any) -> dict[str, Any]:
    """Channels by role ("main", "tokenizer", "verifier"), one per distinct target.

    `grpc_module` is `grpc` or `grpc.aio`: both have `insecure_channel(target, options)` and
    `secure_channel(target, credentials, options)`."""
    credentials = settings.credentials()
    options = [("grpc.primary_user_agent", USER_AGENT), *settings.channel_options]
    by_target: dict[str, Any] = {}

    def channel(target: str) -> Any:
        if target not in by_target:
            if credentials is None:
                by_target[target] = grpc_module.insecure_channel(target, options=options)
            else:
                by_target[target] = grpc_module.secure_channel(target, credentials, options=options)
        return by_target[target]

    return {
        "main": channel(settings.target),
        "tokenizer": channel(settings.tokenizer_target or settings.target),
        "verifier": channel(settings.verifier_target or settings.target),
    }


class ClientBase:
    """Settings, channels and stubs; the sync and asyncio clients differ only in how they execute calls."""

    _grpc_module: Any = grpc

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        tokenizer_target: str | None = None,
        verifier_target: str | None = None,
        tls: bool = False,
        root_certificates: bytes | str | None = None,
        token: str | None = None,
        timeout_s: float | None = 300.0,
        stream_timeout_s: float | None = None,
        retry: RetryPolicy | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """`target` serves mimo.v1.Inference and Rollout (the router), and Tokenizer/Verifier unless
        `tokenizer_target`/`verifier_target` name other servers. `timeout_s` is the default deadline of
        unary calls, `stream_timeout_s` that of streams and rollouts (None: no deadline)."""
        self.settings = ClientSettings(
            target, tokenizer_target, verifier_target, tls, root_certificates, token,
            timeout_s, stream_timeout_s, retry or RetryPolicy(), tuple(channel_options),
        )  # fmt: skip
        channels = open_channels(self.settings, self._grpc_module)
        self._channels = list({id(c): c for c in channels.values()}.values())
        self._stubs: dict[str, Any] = {
            "inference": inference_pb2_grpc.InferenceStub(channels["main"]),
            "rollout": rollout_pb2_grpc.RolloutStub(channels["main"]),
            "admin": admin_pb2_grpc.AdminStub(channels["main"]),
            "tokenizer": tokenizer_pb2_grpc.TokenizerStub(channels["tokenizer"]),
            "verifier": verifier_pb2_grpc.VerifierStub(channels["verifier"]),
        }

    def _rpc(self, spec: CallSpec[Any]) -> Any:
        return getattr(self._stubs[spec.stub], spec.method)

    def _attempts(self, spec: CallSpec[Any], timeout_s: float | None, *, is_stream: bool) -> Attempts:
        return Attempts(self.settings.retry, spec.safety, self.settings.timeout_for(timeout_s, is_stream=is_stream))
