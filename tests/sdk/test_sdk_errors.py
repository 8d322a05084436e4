"""Typed errors with the server's code and message, bearer tokens, and TLS."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status
from mimo_client import (
    NO_RETRY,
    Aborted,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    MimoError,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from mimo_client.errors import retry_after_s

from tests.support.sdk_api import Api
from tests.support.sdk_fakes import FakeServer, retry_info_trailer

CODES = [
    (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument, "sampling.top_p: must be in (0, 1], got 1.5"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted, "admission queue full (512 waiting)"),
    (grpc.StatusCode.UNAVAILABLE, Unavailable, "no healthy worker"),
    (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded, "deadline passed in the queue"),
    (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated, "missing or wrong bearer token"),
    (grpc.StatusCode.NOT_FOUND, NotFound, "model 'mimo-13b' is not served"),
    (grpc.StatusCode.CANCELLED, Cancelled, "aborted by the router"),
    (grpc.StatusCode.INTERNAL, Internal, "worker crashed"),
    (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition, "min_weight_version: '7' asked, the fleet serves '6'"),
    (grpc.StatusCode.ABORTED, Aborted, "a weight update to '8' is running; one at a time"),
    (grpc.StatusCode.DATA_LOSS, MimoError, "a code the SDK has no class for"),
]


@pytest.mark.parametrize("code, error_type, message", CODES, ids=[c[0].name for c in CODES])
async def test_server_error_becomes_typed_exception(
    make_api: Callable[..., Api], fake: FakeServer, code: grpc.StatusCode, error_type: type, message: str
) -> None:
    api = make_api(retry=NO_RETRY)
    fake.script.fail("Chat", code, message)
    with pytest.raises(MimoError) as caught:
        await api.call("chat", [{"role": "user", "content": "hi"}])
    assert type(caught.value) is error_type
    assert (caught.value.code, caught.value.message) == (code, message)
    assert str(caught.value) == f"{code.name}: {message}"


async def test_real_validation_error_from_the_server(api: Api) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await api.call("generate", "")
    assert caught.value.message == "input: give text or token_ids"


async def test_resource_exhausted_carries_retry_advice(make_api: Callable[..., Api], fake: FakeServer) -> None:
    api = make_api(retry=NO_RETRY)
    fake.script.fail("Generate", grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", trailing=[("retry-after-ms", "250")])
    fake.script.fail("Generate", grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full, retry after 1.5s")
    fake.script.fail("Generate", grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")
    advice = []
    for _ in range(3):
        with pytest.raises(ResourceExhausted) as caught:
            await api.call("generate", "x")
        advice.append(caught.value.retry_after_s)
    assert advice == [0.25, 1.5, None]


async def test_standard_retry_advice_comes_first(make_api: Callable[..., Api], fake: FakeServer) -> None:
    api = make_api(retry=NO_RETRY)
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    # RetryInfo beats the older trailer and the phrase; then gRPC's pushback trailer; a negative pushback,
    # and a details trailer that is not a Status, fall back to retry-after-ms.
    trailers = [
        (*retry_info_trailer(0.75), ("retry-after-ms", "250")),
        (("grpc-retry-pushback-ms", "120"), ("retry-after-ms", "250")),
        (("grpc-retry-pushback-ms", "-1"), ("retry-after-ms", "250")),
        (("grpc-status-details-bin", b"\xff not a status"), ("retry-after-ms", "250")),
    ]
    for trailing in trailers:
        fake.script.fail("Generate", exhausted, "queue full, retry after 9s", trailing=trailing)
    advice = []
    for _ in trailers:
        with pytest.raises(ResourceExhausted) as caught:
            await api.call("generate", "x")
        advice.append(caught.value.retry_after_s)
    assert advice == [pytest.approx(0.75), 0.12, 0.25, 0.25]


async def test_a_status_without_retry_info_falls_back(make_api: Callable[..., Api], fake: FakeServer) -> None:
    api = make_api(retry=NO_RETRY)
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="full")  # no details at all
    trailing = (*rpc_status.to_status(status).trailing_metadata, ("retry-after-ms", "40"))
    fake.script.fail("Generate", grpc.StatusCode.RESOURCE_EXHAUSTED, "full", trailing=trailing)
    with pytest.raises(ResourceExhausted) as caught:
        await api.call("generate", "x")
    assert caught.value.retry_after_s == 0.04


@pytest.mark.parametrize(
    "message, expected_s",
    [
        ("retry after 200ms", 0.2),
        ("Retry after 2 seconds", 2.0),
        ("busy; retry-after-ms=40", 0.04),
        ("retry_after_s: 3", 3.0),
        ("retry after 1500 milliseconds", 1.5),
        ("try again later", None),
    ],
)
def test_retry_after_parsing(message: str, expected_s: float | None) -> None:
    assert retry_after_s(message) == pytest.approx(expected_s) if expected_s else retry_after_s(message) is None


async def test_bearer_token_is_sent(make_api: Callable[..., Api], fake: FakeServer) -> None:
    fake.script.expected_token = "s3cret"
    await make_api(token="s3cret").call("list_models")
    assert fake.script.metadata["ListModels"]["authorization"] == "Bearer s3cret"
    with pytest.raises(Unauthenticated, match="bearer token"):
        await make_api(token="wrong").call("list_models")
    with pytest.raises(Unauthenticated):
        await make_api().call("tokenize", "x")
    assert "authorization" not in fake.script.metadata["Tokenize"]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes, Path]:
    """A self-signed certificate for localhost: (key, cert, cert path)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return key.read_bytes(), cert.read_bytes(), cert


async def test_tls_with_root_certificates(make_api: Callable[..., Api], certificate: tuple[bytes, bytes, Path]) -> None:
    key, cert, cert_path = certificate
    server = FakeServer(credentials=grpc.ssl_server_credentials([(key, cert)]))
    try:
        target = f"localhost:{server.port}"
        secure = make_api(target=target, tls=True, root_certificates=str(cert_path), token="t")
        assert (await secure.call("count_tokens", "four")) == 4
        assert server.script.metadata["CountTokens"]["authorization"] == "Bearer t"
        plaintext = make_api(target=target, retry=NO_RETRY, timeout_s=2.0)
        with pytest.raises(Unavailable):
            await plaintext.call("count_tokens", "four")
    finally:
        server.stop()
