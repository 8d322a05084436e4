"""The router's client of the verifier service: one sample's reward, as soon as it is asked for."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from mimo_client.v1 import verifier_pb2, verifier_pb2_grpc

from services.router.domain import Reward, RewardRequest, Verdict


def _task_pb(r: RewardRequest) -> verifier_pb2.VerifyTask:
    task = verifier_pb2.VerifyTask(task_id=r.task_id, response=r.response)
    if r.task.kind == "math":
        task.math.ParseFromString(r.task.payload)
    else:
        task.code.ParseFromString(r.task.payload)
    return task


def reward_of(result: verifier_pb2.VerifyResult) -> Reward:
    return Reward(result.reward, Verdict(result.verdict), result.reason, result.SerializeToString())


def error_reward(task_id: str, index: int, reason: str) -> Reward:
    result = verifier_pb2.VerifyResult(index=index, task_id=task_id, verdict=verifier_pb2.VERDICT_ERROR, reason=reason)
    return reward_of(result)


class RewardClient:
    def __init__(self, target: str, timeout_s: float = 120.0) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = verifier_pb2_grpc.VerifierStub(self._channel)
        self.timeout_s = timeout_s

    async def verify(self, requests: Sequence[RewardRequest]) -> list[Reward]:
        """Rewards for `requests`, in order. A verifier failure becomes VERDICT_ERROR results, never a silent 0."""
        try:
            response = await self._stub.Verify(
                verifier_pb2.VerifyRequest(tasks=[_task_pb(r) for r in requests]), timeout=self.timeout_s
            )
            return [reward_of(r) for r in response.results]
        except grpc.aio.AioRpcError as e:
            reason = f"verifier unavailable: {e.code().name}: {e.details()}"
            return [error_reward(r.task_id, i, reason) for i, r in enumerate(requests)]

    async def close(self) -> None:
        await self._channel.close()
