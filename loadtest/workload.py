"""What the load test sends and how it judges the answers: requests and checks as plain protobuf (no locust)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from mimo_client.v1 import common_pb2, inference_pb2, rollout_pb2, verifier_pb2

from loadtest.slo import CheckFailed


@dataclass(frozen=True, slots=True)
class Workload:
    """Sizes of the requests every user sends."""

    max_new_tokens: int = 32
    num_rollout_prompts: int = 2
    num_rollout_samples: int = 2


# (question, gold answer): math prompts with checkable answers, for chat and for rollouts with math rewards.
QUESTIONS: tuple[tuple[str, str], ...] = (
    ("What is 17 + 25? Put the final answer in \\boxed{}.", "42"),
    ("Compute 12 * 12. Put the final answer in \\boxed{}.", "144"),
    ("Solve 3x + 5 = 20 for x. Put the final answer in \\boxed{}.", "5"),
    ("What is 1/2 + 1/4? Put the final answer in \\boxed{}.", "\\frac{3}{4}"),
    ("How many primes are below 20? Put the final answer in \\boxed{}.", "8"),
)

# (response, references, whether it must be judged correct)
MATH_CASES: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("<think>17 + 25 = 42</think>The answer is \\boxed{42}.", ("42",), True),
    ("<think>a half</think>So x = \\boxed{\\frac{1}{2}}.", ("0.5",), True),
    ("<think>12 * 12 = 124?</think>\\boxed{124}", ("144",), False),
    ("I am not sure.", ("8",), False),
)

SUM_PROGRAM = "Read two integers and print their sum.\n```python\na, b = map(int, input().split())\nprint(a + b)\n```"
SUM_TESTS = (("1 2\n", "3\n"), ("10 -4\n", "6\n"), ("0 0\n", "0\n"))

_FAILED_VERDICTS = {verifier_pb2.VERDICT_UNSPECIFIED, verifier_pb2.VERDICT_ERROR, verifier_pb2.VERDICT_TIMEOUT}


def _user(text: str) -> list[common_pb2.ChatMessage]:
    return [common_pb2.ChatMessage(role="user", content=text)]


def chat_request(workload: Workload, rng: random.Random) -> inference_pb2.ChatRequest:
    question, _ = rng.choice(QUESTIONS)
    sampling = common_pb2.SamplingParams(max_new_tokens=workload.max_new_tokens)
    return inference_pb2.ChatRequest(messages=_user(question), sampling=sampling)


def check_chat(response: inference_pb2.ChatResponse) -> None:
    if not response.choices:
        raise CheckFailed("no choices")
    if any(c.finish_reason == common_pb2.FINISH_REASON_ERROR for c in response.choices):
        raise CheckFailed("finish_reason ERROR")


def stream_tokens(message: inference_pb2.ChatStreamResponse) -> int:
    return len(message.delta.token_ids)


def check_chat_stream(messages: Sequence[inference_pb2.ChatStreamResponse]) -> None:
    reasons = [m.delta.finish_reason for m in messages if m.delta.finish_reason]
    if not reasons:
        raise CheckFailed("stream ended without a finish_reason")
    if common_pb2.FINISH_REASON_ERROR in reasons:
        raise CheckFailed("finish_reason ERROR")


def rollout_request(workload: Workload, rng: random.Random) -> rollout_pb2.RolloutRequest:
    """A small seamless rollout: a few math prompts, a few samples each, rewarded by the verifier."""
    prompts = []
    for i in range(workload.num_rollout_prompts):
        question, answer = rng.choice(QUESTIONS)
        prompts.append(
            rollout_pb2.RolloutPrompt(
                prompt_id=f"p{i}",
                messages=rollout_pb2.ChatMessages(messages=_user(question)),
                math=verifier_pb2.MathTask(references=[answer]),
            )
        )
    return rollout_pb2.RolloutRequest(
        rollout_id=f"loadtest-{uuid.uuid4().hex[:12]}",
        prompts=prompts,
        samples_per_prompt=workload.num_rollout_samples,
        sampling=common_pb2.SamplingParams(max_new_tokens=workload.max_new_tokens),
    )


def rollout_samples(event: rollout_pb2.RolloutEvent) -> int:
    return 1 if event.WhichOneof("event") == "sample" else 0


def check_rollout(events: Sequence[rollout_pb2.RolloutEvent], num_samples: int) -> None:
    """Every sample finished and rewarded: a reward the verifier failed to give is a failure, not a zero."""
    finished = [e.finished for e in events if e.WhichOneof("event") == "finished"]
    if not finished:
        raise CheckFailed("stream ended without RolloutFinished")
    if finished[0].num_samples_finished != num_samples:
        raise CheckFailed(f"{finished[0].num_samples_finished} of {num_samples} samples finished")
    failed = [e.sample.verification for e in events if e.WhichOneof("event") == "sample"]
    failed = [v for v in failed if v.verdict in _FAILED_VERDICTS]
    if failed:
        name = verifier_pb2.Verdict.Name(failed[0].verdict)
        raise CheckFailed(f"{len(failed)} of {num_samples} rewards {name}: {failed[0].reason[:120]}")


def math_verify_request() -> verifier_pb2.VerifyRequest:
    tasks = [
        verifier_pb2.VerifyTask(task_id=f"math-{i}", response=response, math=verifier_pb2.MathTask(references=refs))
        for i, (response, refs, _) in enumerate(MATH_CASES)
    ]
    return verifier_pb2.VerifyRequest(tasks=tasks)


def code_verify_request() -> verifier_pb2.VerifyRequest:
    tests = [verifier_pb2.CodeTest(stdin=i, expected_stdout=o) for i, o in SUM_TESTS]
    code = verifier_pb2.CodeTask(language="python", tests=tests)
    return verifier_pb2.VerifyRequest(
        tasks=[verifier_pb2.VerifyTask(task_id="code-sum", response=SUM_PROGRAM, code=code)]
    )


def check_verdicts(response: verifier_pb2.VerifyResponse, expected_correct: Sequence[bool]) -> None:
    """Each result in its task's place, with the verdict it must have; a verifier failure is never a pass."""
    if len(response.results) != len(expected_correct):
        raise CheckFailed(f"{len(response.results)} results for {len(expected_correct)} tasks")
    for result in sorted(response.results, key=lambda r: r.index):
        if result.index >= len(expected_correct):
            raise CheckFailed(f"result index {result.index} for {len(expected_correct)} tasks")
        verdict = result.verdict
        is_correct = expected_correct[result.index]
        if verdict in _FAILED_VERDICTS or (verdict == verifier_pb2.VERDICT_CORRECT) != is_correct:
            want = "CORRECT" if is_correct else "not CORRECT"
            got = verifier_pb2.Verdict.Name(verdict)
            raise CheckFailed(f"{result.task_id}: expected {want}, got {got} ({result.reason[:120]})")


MATH_EXPECTED = tuple(is_correct for _, _, is_correct in MATH_CASES)
CODE_EXPECTED = (True,)
