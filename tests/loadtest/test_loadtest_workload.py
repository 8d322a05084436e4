"""The load test's judgement of answers: a wrong verdict or a failed reward is an error, never a pass."""

from __future__ import annotations

import random

import pytest
from mimo_client.v1 import common_pb2, inference_pb2, rollout_pb2, verifier_pb2

from loadtest import workload as w
from loadtest.slo import CheckFailed

V = verifier_pb2


def results(*verdicts: int) -> verifier_pb2.VerifyResponse:
    return V.VerifyResponse(
        results=[V.VerifyResult(index=i, task_id=f"t{i}", verdict=v, reason="r") for i, v in enumerate(verdicts)]
    )


def test_expected_verdicts_pass_in_any_order():
    response = results(V.VERDICT_CORRECT, V.VERDICT_INCORRECT, V.VERDICT_NO_ANSWER)
    response.results.reverse()
    w.check_verdicts(response, (True, False, False))


@pytest.mark.parametrize(
    "verdicts,message",
    [
        ((V.VERDICT_INCORRECT, V.VERDICT_INCORRECT), "t0: expected CORRECT, got VERDICT_INCORRECT"),
        ((V.VERDICT_CORRECT, V.VERDICT_CORRECT), "t1: expected not CORRECT, got VERDICT_CORRECT"),
        ((V.VERDICT_CORRECT, V.VERDICT_ERROR), "t1: expected not CORRECT, got VERDICT_ERROR"),
        ((V.VERDICT_TIMEOUT, V.VERDICT_INCORRECT), "got VERDICT_TIMEOUT"),
        ((V.VERDICT_CORRECT,), "1 results for 2 tasks"),
    ],
)
def test_wrong_or_failed_verdicts_are_failures(verdicts, message):
    with pytest.raises(CheckFailed, match=message):
        w.check_verdicts(results(*verdicts), (True, False))


def test_the_math_batch_expects_what_its_cases_say():
    request = w.math_verify_request()
    assert [t.WhichOneof("kind") for t in request.tasks] == ["math"] * len(w.MATH_EXPECTED)
    assert w.MATH_EXPECTED.count(True) >= 1 and w.MATH_EXPECTED.count(False) >= 1
    [code] = w.code_verify_request().tasks
    assert code.code.language == "python" and len(code.code.tests) == 3 and "```python" in code.response


def sample(verdict: int, reason: str = "") -> rollout_pb2.RolloutEvent:
    verification = V.VerifyResult(verdict=verdict, reason=reason)
    return rollout_pb2.RolloutEvent(sample=rollout_pb2.SampleFinished(verification=verification))


def finished(num_samples: int) -> rollout_pb2.RolloutEvent:
    return rollout_pb2.RolloutEvent(finished=rollout_pb2.RolloutFinished(num_samples_finished=num_samples))


def test_a_rollout_with_rewards_passes_even_when_every_answer_is_wrong():
    w.check_rollout([sample(V.VERDICT_INCORRECT), sample(V.VERDICT_NO_ANSWER), finished(2)], num_samples=2)


def test_rollout_rewards_the_verifier_could_not_give_are_failures():
    events = [sample(V.VERDICT_ERROR, "verifier unavailable: UNAVAILABLE"), sample(V.VERDICT_CORRECT), finished(2)]
    with pytest.raises(CheckFailed, match="1 of 2 rewards VERDICT_ERROR: verifier unavailable"):
        w.check_rollout(events, num_samples=2)


def test_rollouts_missing_samples_or_the_end_are_failures():
    with pytest.raises(CheckFailed, match="1 of 2 samples finished"):
        w.check_rollout([sample(V.VERDICT_CORRECT), finished(1)], num_samples=2)
    with pytest.raises(CheckFailed, match="without RolloutFinished"):
        w.check_rollout([sample(V.VERDICT_CORRECT)], num_samples=1)


def test_a_stream_must_finish_without_error():
    ok = inference_pb2.ChatStreamResponse(delta=inference_pb2.StreamDelta(finish_reason=common_pb2.FINISH_REASON_STOP))
    bad = inference_pb2.ChatStreamResponse(
        delta=inference_pb2.StreamDelta(finish_reason=common_pb2.FINISH_REASON_ERROR)
    )
    w.check_chat_stream([ok])
    with pytest.raises(CheckFailed, match="without a finish_reason"):
        w.check_chat_stream([inference_pb2.ChatStreamResponse()])
    with pytest.raises(CheckFailed, match="ERROR"):
        w.check_chat_stream([bad])


def test_rollout_request_has_math_rewards_and_the_asked_sizes():
    request = w.rollout_request(
        w.Workload(max_new_tokens=8, num_rollout_prompts=3, num_rollout_samples=4), random.Random(1)
    )
    assert len(request.prompts) == 3 and request.samples_per_prompt == 4
    assert all(p.WhichOneof("reward") == "math" and p.math.references for p in request.prompts)
    assert request.sampling.max_new_tokens == 8 and request.rollout_id.startswith("loadtest-")
