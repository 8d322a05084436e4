"""Bearer-token auth on the shared runtime (one key, as --auth-token gives): calls without the token are refused,
health checks stay open."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mimo_client.v1 import tokenizer_pb2, tokenizer_pb2_grpc

from services.common.auth import ApiKey, KeyRing
from services.common.config import ServerSettings
from services.common.interceptors import KeyRingInterceptor
from services.common.server import Service, start
from tests.support.sleepy_server import SleepyTokenizer


async def test_bearer_token_required_but_health_open():
    service = Service(
        register=lambda s: tokenizer_pb2_grpc.add_TokenizerServicer_to_server(SleepyTokenizer(), s),
        names=["mimo.v1.Tokenizer"],
        interceptors=[KeyRingInterceptor(KeyRing([ApiKey("default", "s3cret")]), lambda s, m: ())],
    )
    running = await start(ServerSettings(service="authtest", listen="127.0.0.1:0"), service)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = tokenizer_pb2_grpc.TokenizerStub(channel)
            request = tokenizer_pb2.CountTokensRequest(texts=["0"])
            for metadata in [(), (("authorization", "Bearer wrong"),)]:
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub.CountTokens(request, metadata=metadata, timeout=5)
                assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            ok = await stub.CountTokens(request, metadata=(("authorization", "Bearer s3cret"),), timeout=5)
            assert ok.total == 0
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await running.drain()
