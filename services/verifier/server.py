"""The mimo.v1.Verifier servicer: proto in, domain tasks to the Verifier, results back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from mimo_client.v1 import verifier_pb2 as pb
from mimo_client.v1 import verifier_pb2_grpc as pb_grpc

from services.common.server import Service
from services.verifier.domain import Task
from services.verifier.verifier import Overloaded, Verifier
from services.verifier.wire import InvalidTask, result_to_proto, tasks_from_request

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Verifier"].full_name


class VerifierServicer(pb_grpc.VerifierServicer):
    """Verify (a batch, results in order) and VerifyStream (results as they finish)."""

    def __init__(self, verifier: Verifier) -> None:
        self._verifier = verifier

    async def _tasks(self, request: pb.VerifyRequest, context: grpc.aio.ServicerContext) -> list[Task]:
        settings = self._verifier.settings
        try:
            tasks = tasks_from_request(
                request,
                has_cxx=settings.sandbox.cxx is not None,
                max_time_limit_s=settings.max_time_limit_s,
                max_memory_bytes=settings.max_memory_bytes,
            )
            self._verifier.admit(len(tasks))
        except InvalidTask as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except Overloaded as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        return tasks

    async def Verify(self, request: pb.VerifyRequest, context: grpc.aio.ServicerContext) -> pb.VerifyResponse:
        tasks = await self._tasks(request, context)
        results = await self._verifier.verify(tasks)
        return pb.VerifyResponse(results=[result_to_proto(r) for r in results])

    async def VerifyStream(
        self, request: pb.VerifyRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.VerifyResult]:
        tasks = await self._tasks(request, context)
        async for result in self._verifier.verify_stream(tasks):
            yield result_to_proto(result)


def make_service(verifier: Verifier) -> Service:
    """The Service the shared runtime serves; the verifier's pools close when the server stops."""
    servicer = VerifierServicer(verifier)
    return Service(
        register=lambda server: pb_grpc.add_VerifierServicer_to_server(servicer, server),
        names=[SERVICE_NAME],
        on_stop=[verifier.close],
    )
