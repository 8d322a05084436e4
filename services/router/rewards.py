"""The router's client of the verifier service: one sample's reward, as soon as it is asked for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import grpc
from mimo_client.v1 import verifier_pb2, verifier_pb2_grpc

from services.common.tracing import client_interceptors
from services.router import metrics_rollout as metrics
from services.router.domain import Reward, RewardRequest, Verdict


def _task_pb(r: RewardRequest) -> verifier_pb2.VerifyTask:
    task = verifier_pb2.VerifyTask(task_id=r.task_id, response=r.response)
    if r.task is None:  # an open reward: the scorer (a reward model, a rubric) sees the response alone
        return task
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


TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
}
# Balance over every address a target resolves to (a headless Service's pods, or "ipv4:a:p,b:p").
CHANNEL_OPTIONS = [("grpc.lb_policy_name", "round_robin")]


class RewardClient:
    """Rewards from a `mimo.v1.Verifier` service; transient failures are retried with backoff for up to
    `retry_s` (and never past the caller's deadline)."""

    def __init__(self, target: str, timeout_s: float = 120.0, retry_s: float = 60.0) -> None:
        self._channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=client_interceptors())
        self._stub = verifier_pb2_grpc.VerifierStub(self._channel)
        self.timeout_s = timeout_s
        self.retry_s = retry_s

    async def verify(self, requests: Sequence[RewardRequest], deadline: float | None = None) -> list[Reward]:
        """Rewards for `requests`, in order. A verifier still failing when the retries run out becomes
        VERDICT_ERROR results (never a silent 0)."""
        request = verifier_pb2.VerifyRequest(tasks=[_task_pb(r) for r in requests])
        give_up = time.monotonic() + self.retry_s
        if deadline is not None:
            give_up = min(give_up, deadline)
        delay_s = 0.1
        while True:
            try:
                response = await self._stub.Verify(request, timeout=self.timeout_s)
                return [reward_of(r) for r in response.results]
            except grpc.aio.AioRpcError as e:
                if e.code() not in TRANSIENT or time.monotonic() + delay_s > give_up:
                    reason = f"verifier unavailable: {e.code().name}: {e.details()}"
                    metrics.REWARD_ERRORS.inc(len(requests))
                    return [error_reward(r.task_id, i, reason) for i, r in enumerate(requests)]
                metrics.REWARD_RETRIES.inc()
                await asyncio.sleep(delay_s)
                delay_s = min(2.0, delay_s * 2)

    async def close(self) -> None:
        await self._channel.close()
