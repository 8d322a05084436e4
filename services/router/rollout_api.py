"""`mimo.v1.Rollout`: validate, run, stream the events."""

from __future__ import annotations

from mimo_client.v1 import rollout_pb2_grpc

from services.router.gateway import Gateway
from services.router.inference import stream_errors
from services.router.rewards import RewardClient
from services.router.rollout import RolloutRun, stream_rollout, validate_rollout


class RolloutServicer(rollout_pb2_grpc.RolloutServicer):
    def __init__(self, gateway: Gateway, rewards: RewardClient) -> None:
        self.gateway = gateway
        self.rewards = rewards

    @stream_errors
    async def Rollout(self, request, context):
        n = validate_rollout(request, self.gateway.tokenizer.snapshot.vocab_size)
        async for event in stream_rollout(RolloutRun(self.gateway, self.rewards, request, n)):
            yield event
