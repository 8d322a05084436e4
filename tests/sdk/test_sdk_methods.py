"""Every SDK method against the fake services over loopback, for both the sync and the asyncio client."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from mimo_client import (
    CodeTask,
    CodeTest,
    Completion,
    GroupFinished,
    MathTask,
    Message,
    MimoError,
    RolloutFinished,
    RolloutPrompt,
    SampleFinished,
    StreamDelta,
    VerifyTask,
)

from tests.support.sdk_api import Api
from tests.support.sdk_fakes import ANSWER, REASONING, FakeServer


async def test_generate_returns_typed_completion(api: Api) -> None:
    completion = await api.call("generate", "What is 2 + 2?", n=2, split_reasoning=True, request_id="r-7")
    assert isinstance(completion, Completion)
    assert completion.request_id == "r-7" and completion.model == "tiny-mimo"
    assert [c.index for c in completion.choices] == [0, 1]
    first = completion.choices[0]
    assert (first.text, first.reasoning, first.finish_reason, first.matched_stop) == (
        ANSWER,
        REASONING,
        "stop",
        "<|im_end|>",
    )
    assert bytes(first.token_ids).decode() == ANSWER
    assert completion.usage.prompt_tokens == len(b"What is 2 + 2?")
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


async def test_generate_from_token_ids(api: Api, fake: FakeServer) -> None:
    completion = await api.call("generate", [1, 2, 3])
    assert list(fake.script.requests["Generate"].token_ids.ids) == [1, 2, 3]
    assert completion.usage.prompt_tokens == 3


async def test_sampling_sets_only_given_fields(api: Api, fake: FakeServer) -> None:
    completion = await api.call("generate", "hi", temperature=0.0, max_new_tokens=5, stop="###", seed=7)
    sampling = fake.script.requests["Generate"].sampling
    assert sampling.HasField("temperature") and sampling.temperature == 0.0  # greedy is a real choice, kept
    assert (sampling.max_new_tokens, list(sampling.stop), sampling.seed) == (5, ["###"], 7)
    assert not sampling.HasField("top_p") and not sampling.HasField("top_k")  # left to the server's defaults
    assert completion.choices[0].finish_reason == "length"


async def test_unknown_sampling_option_is_refused_before_sending(api: Api, fake: FakeServer) -> None:
    with pytest.raises(TypeError, match="temprature"):
        await api.call("generate", "hi", temprature=0.5)
    assert fake.script.calls["Generate"] == 0


async def test_generate_stream_yields_deltas_then_usage(api: Api) -> None:
    deltas = await api.collect("generate_stream", "What is 2 + 2?", top_p=0.9)
    assert all(isinstance(d, StreamDelta) for d in deltas)
    assert "".join(d.text for d in deltas) == ANSWER
    assert [d.finish_reason for d in deltas[:-1]] == [None] * (len(deltas) - 2) + ["stop"]
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == len(ANSWER.encode())
    assert all(d.usage is None for d in deltas[:-1])


async def test_chat_accepts_dicts_and_messages(api: Api, fake: FakeServer) -> None:
    messages = [
        {"role": "system", "content": ""},
        Message("user", "What is 2 + 2?"),
        {"role": "assistant", "content": "4", "reasoning_content": "easy"},
        {"role": "user", "content": "Sure?"},
    ]
    completion = await api.call("chat", messages, temperature=0.6)
    sent = fake.script.requests["Chat"].messages
    assert [(m.role, m.content) for m in sent] == [
        (m["role"], m["content"]) if isinstance(m, dict) else (m.role, m.content) for m in messages
    ]
    assert sent[2].reasoning_content == "easy" and not sent[1].HasField("reasoning_content")
    assert completion.choices[0].reasoning == REASONING and completion.text == ANSWER


async def test_chat_message_without_role_names_the_item(api: Api) -> None:
    with pytest.raises(ValueError, match=r"messages\[1\]"):
        await api.call("chat", [{"role": "user", "content": "a"}, {"content": "b"}])


async def test_leaving_a_stream_cancels_it_on_the_server(api: Api, fake: FakeServer) -> None:
    fake.script.stall_after_first.add("ChatStream")
    first = await api.first_then_stop("chat_stream", [{"role": "user", "content": "2+2?"}])
    assert first.text == "The"
    assert fake.script.cancelled.wait(2.0)  # the server stops generating instead of running to max_new_tokens


async def test_chat_stream(api: Api) -> None:
    deltas = await api.collect("chat_stream", [{"role": "user", "content": "2+2?"}])
    assert "".join(d.text for d in deltas) == ANSWER and deltas[-1].usage is not None


async def test_list_models(api: Api) -> None:
    (model,) = await api.call("list_models")
    assert (model.id, model.max_context_tokens, model.num_workers, model.mtp_enabled) == ("tiny-mimo", 2048, 2, True)


async def test_tokenize_one_and_many(api: Api) -> None:
    one = await api.call("tokenize", "héllo", return_offsets=True)
    assert one.ids == list("héllo".encode()) and one.offsets[:3] == [(0, 1), (1, 2), (1, 2)]
    many = await api.call("tokenize", ["a", "bc"])
    assert [r.ids for r in many] == [[97], [98, 99]] and many[0].offsets == []


async def test_detokenize_one_and_many(api: Api) -> None:
    assert await api.call("detokenize", [104, 105]) == "hi"
    assert await api.call("detokenize", [[104, 105], [111, 107]]) == ["hi", "ok"]


async def test_apply_chat_template(api: Api) -> None:
    result = await api.call("apply_chat_template", [{"role": "user", "content": "hi"}])
    assert result.text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert bytes(result.ids).decode() == result.text


async def test_count_tokens_one_and_many(api: Api) -> None:
    assert await api.call("count_tokens", "four") == 4
    assert await api.call("count_tokens", ["a", "bcd"]) == [1, 3]


async def test_verify_math(api: Api) -> None:
    correct = await api.call("verify_math", "so \\boxed{4}", "4")
    assert (correct.reward, correct.verdict, correct.extracted_answer) == (1.0, "correct", "4")
    wrong = await api.call("verify_math", "so \\boxed{5}", ["4", "four"])
    assert (wrong.reward, wrong.verdict, wrong.reason) == (0.0, "incorrect", "5 matches no reference")
    assert (await api.call("verify_math", "no idea", "4")).verdict == "no_answer"


async def test_verify_code_with_dict_tests(api: Api, fake: FakeServer) -> None:
    tests = [{"stdin": "1", "expected_stdout": "2"}, CodeTest(stdin="2", expected_stdout="9", level=2)]
    result = await api.call("verify_code", "```python\nprint(2)\n```", tests, reward_mode="soft", time_limit_s=2.0)
    assert (result.verdict, result.reward) == ("partial", 0.5)
    assert [(t.status, t.level) for t in result.tests] == [("passed", 1), ("wrong_answer", 2)]
    code = fake.script.requests["Verify"].tasks[0].code
    assert code.reward_mode == 3 and code.time_limit_s == 2.0 and not code.HasField("memory_limit_bytes")


async def test_verify_code_refuses_unknown_reward_mode(api: Api) -> None:
    with pytest.raises(ValueError, match="reward_mode"):
        await api.call("verify_code", "x", [CodeTest("1", "1")], reward_mode="lenient")


async def test_verify_batch_in_task_order(api: Api) -> None:
    tasks = [
        VerifyTask("\\boxed{4}", MathTask(["4"]), task_id="m"),
        VerifyTask("prints 7", CodeTask([CodeTest("", "7")]), task_id="c"),
        VerifyTask("\\boxed{3}", MathTask(["4"]), task_id="w"),
    ]
    results = await api.call("verify", tasks)
    assert [(r.task_id, r.verdict) for r in results] == [("m", "correct"), ("c", "correct"), ("w", "incorrect")]


async def test_rollout_yields_typed_events(api: Api, fake: FakeServer) -> None:
    prompts = [
        RolloutPrompt("p0", messages=[{"role": "user", "content": "2+2?"}], reward=MathTask(["4"])),
        RolloutPrompt("p1", token_ids=[1, 2, 3], reward=MathTask(["4"])),
    ]
    events = await api.collect(
        "rollout", prompts, samples_per_prompt=2, weight_version="w3", early_termination="fifo", target_prompts=1
    )
    samples = [e for e in events if isinstance(e, SampleFinished)]
    groups = [e for e in events if isinstance(e, GroupFinished)]
    assert [(s.prompt_id, s.sample_index, s.reward) for s in samples] == [
        ("p0", 0, 1.0),
        ("p0", 1, 0.0),
        ("p1", 0, 1.0),
        ("p1", 1, 0.0),
    ]
    assert samples[0].verification is not None and samples[0].verification.verdict == "correct"
    assert [(g.prompt_id, g.pass_rate, g.all_correct, g.all_wrong) for g in groups] == [
        ("p0", 0.5, False, False)
    ] * 1 + [("p1", 0.5, False, False)]
    assert isinstance(events[-1], RolloutFinished) and events[-1].num_samples_finished == 4
    assert {e.weight_version for e in events} == {"w3"}
    request = fake.script.requests["Rollout"]
    assert (request.early_termination, request.target_prompts, request.prompts[1].WhichOneof("input")) == (
        2,
        1,
        "token_ids",
    )


async def test_rollout_progress_bar_counts_samples(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = [RolloutPrompt(f"p{i}", token_ids=[1], reward=MathTask(["4"])) for i in range(3)]
    await api.collect("rollout", prompts, samples_per_prompt=2, progress=True)
    assert "6/6" in capsys.readouterr().err


async def test_rollout_prompt_needs_one_input(api: Api) -> None:
    with pytest.raises(ValueError, match="exactly one of messages and token_ids"):
        await api.collect("rollout", [RolloutPrompt("p0")])


async def test_separate_tokenizer_and_verifier_targets(make_api: Callable[..., Api]) -> None:
    router, tokenizer, verifier = FakeServer(("inference",)), FakeServer(("tokenizer",)), FakeServer(("verifier",))
    try:
        api = make_api(target=router.target, tokenizer_target=tokenizer.target, verifier_target=verifier.target)
        assert (await api.call("tokenize", "ab")).ids == [97, 98]
        assert (await api.call("verify_math", "\\boxed{1}", "1")).verdict == "correct"
        assert (await api.call("generate", "x")).text.endswith(ANSWER)
        assert (
            tokenizer.script.calls["Tokenize"],
            verifier.script.calls["Verify"],
            router.script.calls["Generate"],
        ) == (1, 1, 1)
        alone = make_api(target=router.target)  # the router alone does not serve mimo.v1.Tokenizer
        with pytest.raises(MimoError) as caught:
            await alone.call("count_tokens", "ab")
        assert caught.value.code == grpc.StatusCode.UNIMPLEMENTED
    finally:
        for server in (router, tokenizer, verifier):
            server.stop()
