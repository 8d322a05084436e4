"""The MiMo user and its tasks: chat, streaming chat, small rollouts with math rewards, verification."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from typing import Any

from locust import constant
from mimo_client.v1 import inference_pb2_grpc, rollout_pb2_grpc, verifier_pb2_grpc

from loadtest import workload as w
from loadtest.grpc_user import GrpcUser
from loadtest.slo import STREAM_TYPE


class MimoUser(GrpcUser):
    """Talks to the router at `host` (and the verifier at `verifier_host` for the verify task).

    Concrete users are subclasses that set `host`, `tasks`, `workload` and optionally `verifier_host`
    (see `user_class`).
    """

    abstract = True
    wait_time = constant(0)
    verifier_host: str | None = None
    workload: w.Workload = w.Workload()

    def on_start(self) -> None:
        router = self.channel(str(self.host))
        self.inference = inference_pb2_grpc.InferenceStub(router)
        self.rollouts = rollout_pb2_grpc.RolloutStub(router)
        self.verifier = verifier_pb2_grpc.VerifierStub(self.channel(self.verifier_host)) if self.verifier_host else None
        self.rng = random.Random()


def chat(user: MimoUser) -> None:
    """One unary Chat; size = completion tokens."""
    user.rpc.unary(
        "Chat",
        user.inference.Chat,
        w.chat_request(user.workload, user.rng),
        size=lambda r: r.usage.completion_tokens,
        check=w.check_chat,
    )


def chat_stream(user: MimoUser) -> None:
    """One ChatStream: rows ChatStream, ChatStream ttft, ChatStream itl, ChatStream tpot."""
    user.rpc.stream(
        "ChatStream",
        user.inference.ChatStream,
        w.chat_request(user.workload, user.rng),
        tokens=w.stream_tokens,
        check=w.check_chat_stream,
    )


def rollout(user: MimoUser) -> None:
    """One small seamless rollout: rows Rollout, Rollout first sample, Rollout reward wait (server-measured)."""
    request = w.rollout_request(user.workload, user.rng)
    num_samples = len(request.prompts) * request.samples_per_prompt
    events = user.rpc.stream(
        "Rollout",
        user.rollouts.Rollout,
        request,
        tokens=w.rollout_samples,
        check=functools.partial(w.check_rollout, num_samples=num_samples),
        first_name="first sample",
        gap_name=None,
    )
    for event in events or ():
        if event.WhichOneof("event") == "sample":
            user.rpc.report("Rollout reward wait", event.sample.reward_wait_s, kind=STREAM_TYPE)


def verify(user: MimoUser) -> None:
    """A batch of math answers and a small Python program: rows Verify math, Verify code."""
    if user.verifier is None:
        raise RuntimeError("the verify task needs --verifier HOST:PORT")
    math_check = functools.partial(w.check_verdicts, expected_correct=w.MATH_EXPECTED)
    user.rpc.unary("Verify math", user.verifier.Verify, w.math_verify_request(), size=_num_results, check=math_check)
    code_check = functools.partial(w.check_verdicts, expected_correct=w.CODE_EXPECTED)
    user.rpc.unary("Verify code", user.verifier.Verify, w.code_verify_request(), size=_num_results, check=code_check)


def _num_results(response: Any) -> int:
    return len(response.results)


TASKS: dict[str, Callable[[MimoUser], None]] = {
    "chat": chat,
    "chat_stream": chat_stream,
    "rollout": rollout,
    "verify": verify,
}


def user_class(
    target: str,
    task_names: list[str],
    workload: w.Workload,
    verifier: str | None = None,
    timeout_s: float = 60.0,
) -> type[MimoUser]:
    """A concrete MimoUser running `task_names` with equal weights."""
    unknown = [t for t in task_names if t not in TASKS]
    if unknown or not task_names:
        raise ValueError(f"--tasks: unknown {unknown or 'empty list'}; choose from {','.join(TASKS)}")
    if "verify" in task_names and not verifier:
        raise ValueError("--tasks verify needs --verifier HOST:PORT")
    attrs = {
        "host": target,
        "verifier_host": verifier,
        "workload": workload,
        "timeout_s": timeout_s,
        "tasks": [TASKS[t] for t in task_names],
    }
    return type("MimoLoadUser", (MimoUser,), attrs)
