"""The rollout bench's verifier front: the router asks it for rewards; it forwards each request to the real
verifier service (the verdicts) and holds every task in one of `slots` sandbox slots for a modelled time.

Why the hold: sim workers emit random text, so the real math check returns NO_ANSWER in microseconds, while a
real RL reward (a code task's tests in a sandbox, a slow symbolic check) takes about a second per sample on a
finite pool of sandboxes. The hold is seeded lognormal around `delay_s`, scaled by the sim time scale so that
generation and verification stay in proportion. Without the verifier service (`--verifier modelled`), verdicts
are modelled too (INCORRECT, saying so in `reason`).

Pass rates: the sim's text is random, so no real check can pass it. With `pass_rates` (prompt id -> the
problem's modelled pass rate), each sample's verdict is CORRECT with that probability, from a seeded hash of its
task id ("prompt_id/sample_index"), the same in every mode of a run; the upstream verifier (when there is one)
still checks every task, for its load, and its verdict is replaced, saying so in `reason`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from dataclasses import dataclass

import grpc
from mimo_client.v1 import verifier_pb2, verifier_pb2_grpc


@dataclass(frozen=True, slots=True)
class VerifyDelay:
    delay_s: float = 1.0  # modelled seconds per task (before time scaling)
    sigma: float = 0.5
    slots: int = 64  # tasks verified at once
    time_scale: float = 1.0


def modelled_verdict(task: verifier_pb2.VerifyTask, index: int, pass_rate: float) -> verifier_pb2.VerifyResult:
    digest = hashlib.blake2b(task.task_id.encode(), digest_size=8).digest()
    correct = int.from_bytes(digest, "big") / 2**64 < pass_rate
    return verifier_pb2.VerifyResult(
        index=index,
        task_id=task.task_id,
        reward=1.0 if correct else 0.0,
        verdict=verifier_pb2.VERDICT_CORRECT if correct else verifier_pb2.VERDICT_INCORRECT,
        reason=f"modelled verdict: the problem's pass rate is {pass_rate:.2f} (bench rollout)",
    )


class DelayedVerifier(verifier_pb2_grpc.VerifierServicer):
    def __init__(
        self, delay: VerifyDelay, upstream: str | None, seed: int = 7, pass_rates: dict[str, float] | None = None
    ) -> None:
        self.delay = delay
        self.pass_rates = pass_rates
        self._slots = asyncio.Semaphore(max(1, delay.slots))
        self._rng = random.Random(seed)
        self._channel = grpc.aio.insecure_channel(upstream) if upstream else None
        self._stub = verifier_pb2_grpc.VerifierStub(self._channel) if self._channel else None
        self.tasks = 0
        self.busy_s = 0.0

    def _hold_s(self) -> float:
        d = self.delay
        return d.delay_s * d.time_scale * math.exp(d.sigma * self._rng.gauss(0, 1) - d.sigma**2 / 2)

    async def _hold(self) -> None:
        async with self._slots:
            hold = self._hold_s()
            self.busy_s += hold
            await asyncio.sleep(hold)

    async def Verify(self, request: verifier_pb2.VerifyRequest, context) -> verifier_pb2.VerifyResponse:
        self.tasks += len(request.tasks)
        holds = asyncio.gather(*(self._hold() for _ in request.tasks))
        if self.pass_rates is not None:
            if self._stub is not None:
                await asyncio.gather(self._stub.Verify(request, timeout=120), holds)
            else:
                await holds
            rates = [self.pass_rates.get(t.task_id.rpartition("/")[0], 0.0) for t in request.tasks]
            results = [modelled_verdict(t, i, p) for i, (t, p) in enumerate(zip(request.tasks, rates, strict=True))]
            return verifier_pb2.VerifyResponse(results=results)
        if self._stub is None:
            await holds
            return verifier_pb2.VerifyResponse(
                results=[
                    verifier_pb2.VerifyResult(
                        index=i,
                        task_id=t.task_id,
                        verdict=verifier_pb2.VERDICT_INCORRECT,
                        reason="modelled verdict (bench run without the verifier service)",
                    )
                    for i, t in enumerate(request.tasks)
                ]
            )
        response, _ = await asyncio.gather(self._stub.Verify(request, timeout=120), holds)
        return response

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()


async def serve(servicer: DelayedVerifier) -> tuple[grpc.aio.Server, str]:
    """Serve the front on a free loopback port in this process; returns (server, host:port)."""
    server = grpc.aio.server()
    verifier_pb2_grpc.add_VerifierServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"
