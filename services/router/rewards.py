"""The router's client of the verifier service: one sample's reward, as soon as it is asked for."""

from __future__ import annotations

import grpc
from mimo_client.v1 import verifier_pb2, verifier_pb2_grpc


class RewardClient:
    def __init__(self, target: str, timeout_s: float = 120.0) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = verifier_pb2_grpc.VerifierStub(self._channel)
        self.timeout_s = timeout_s

    async def verify(self, tasks: list[verifier_pb2.VerifyTask]) -> list[verifier_pb2.VerifyResult]:
        """Rewards for `tasks`, in order. A verifier failure becomes VERDICT_ERROR results, never a silent 0."""
        try:
            response = await self._stub.Verify(verifier_pb2.VerifyRequest(tasks=tasks), timeout=self.timeout_s)
            return list(response.results)
        except grpc.aio.AioRpcError as e:
            reason = f"verifier unavailable: {e.code().name}: {e.details()}"
            return [
                verifier_pb2.VerifyResult(index=i, task_id=t.task_id, verdict=verifier_pb2.VERDICT_ERROR, reason=reason)
                for i, t in enumerate(tasks)
            ]

    async def close(self) -> None:
        await self._channel.close()
