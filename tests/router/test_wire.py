"""Every input check in services/router/wire.py: a bad value is refused naming its field; good values parse into
the domain request the pipeline runs."""

from __future__ import annotations

import pytest
from mimo_client.v1 import common_pb2, inference_pb2, rollout_pb2, verifier_pb2

from services.router import wire
from services.router.domain import InvalidRequest, Prompt, RolloutMode

VOCAB = 576


def generate(**fields) -> inference_pb2.GenerateRequest:
    return inference_pb2.GenerateRequest(text=fields.pop("text", "hi"), **fields)


def chat(*messages: tuple[str, str], **fields) -> inference_pb2.ChatRequest:
    msgs = [common_pb2.ChatMessage(role=r, content=c) for r, c in messages] or [
        common_pb2.ChatMessage(role="user", content="hi")
    ]
    return inference_pb2.ChatRequest(messages=msgs, **fields)


def prompt(**fields) -> rollout_pb2.RolloutPrompt:
    defaults = {
        "prompt_id": "p0",
        "token_ids": common_pb2.TokenIds(ids=[1, 2]),
        "math": verifier_pb2.MathTask(references=["4"]),
    }
    defaults.update(fields)
    return rollout_pb2.RolloutPrompt(**defaults)


def rollout(*prompts: rollout_pb2.RolloutPrompt, **fields) -> rollout_pb2.RolloutRequest:
    return rollout_pb2.RolloutRequest(prompts=list(prompts) or [prompt()], **fields)


S = common_pb2.SamplingParams
BAD_SAMPLING = [
    (S(temperature=float("nan")), "sampling.temperature"),
    (S(temperature=-0.1), "sampling.temperature"),
    (S(top_p=0.0), "sampling.top_p"),
    (S(top_p=1.5), "sampling.top_p"),
    (S(top_k=0), "sampling.top_k"),
    (S(min_p=1.5), "sampling.min_p"),
    (S(repetition_penalty=0.0), "sampling.repetition_penalty"),
    (S(frequency_penalty=3.0), "sampling.frequency_penalty"),
    (S(presence_penalty=float("inf")), "sampling.presence_penalty"),
    (S(max_new_tokens=0), "sampling.max_new_tokens"),
    (S(stop=["x"] * 17), "sampling.stop"),
    (S(stop=[""]), "sampling.stop"),
    (S(stop=["x" * 257]), "sampling.stop"),
    (S(stop=["a\0b"]), "sampling.stop"),
]


@pytest.mark.parametrize(("sampling", "field"), BAD_SAMPLING)
def test_bad_sampling_is_refused_naming_the_field_in_every_request_kind(sampling, field):
    for parse in (
        lambda: wire.generate_request(generate(sampling=sampling), "Generate", False, None),
        lambda: wire.chat_request(chat(sampling=sampling), "Chat", False, None),
        lambda: wire.rollout_spec(rollout(sampling=sampling), VOCAB, None),
    ):
        with pytest.raises(InvalidRequest) as e:
            parse()
        assert e.value.field == field


BAD_REQUESTS = [
    (lambda: wire.generate_request(inference_pb2.GenerateRequest(), "Generate", False, None), "input"),
    (lambda: wire.generate_request(generate(text=""), "Generate", False, None), "text"),
    (lambda: wire.generate_request(generate(text="x" * (wire.MAX_PROMPT_CHARS + 1)), "G", False, None), "text"),
    (lambda: wire.generate_request(generate(n=65), "Generate", False, None), "n"),
    (lambda: wire.generate_request(generate(top_logprobs=21), "Generate", False, None), "top_logprobs"),
    (lambda: wire.generate_request(generate(request_id="r" * 257), "Generate", False, None), "request_id"),
    (lambda: wire.generate_request(generate(request_id="a\0b"), "Generate", False, None), "request_id"),
    (lambda: wire.chat_request(inference_pb2.ChatRequest(), "Chat", False, None), "messages"),
    (lambda: wire.chat_request(chat(("robot", "hi")), "Chat", False, None), "messages[0].role"),
    (lambda: wire.chat_request(chat(*[("user", "x")] * (wire.MAX_MESSAGES + 1)), "Chat", False, None), "messages"),
    (lambda: wire.chat_request(chat(("user", "x" * (wire.MAX_PROMPT_CHARS + 1))), "Chat", False, None), "messages"),
    (lambda: wire.rollout_spec(rollout_pb2.RolloutRequest(), VOCAB, None), "prompts"),
    (lambda: wire.rollout_spec(rollout(samples_per_prompt=65), VOCAB, None), "samples_per_prompt"),
    (lambda: wire.rollout_spec(rollout(mode=7), VOCAB, None), "mode"),
    (lambda: wire.rollout_spec(rollout(early_termination=9), VOCAB, None), "early_termination"),
    (lambda: wire.rollout_spec(rollout(early_termination=2, target_prompts=2), VOCAB, None), "target_prompts"),
    (lambda: wire.rollout_spec(rollout(rollout_pb2.RolloutPrompt(prompt_id="p")), VOCAB, None), "prompts[0].input"),
    (
        lambda: wire.rollout_spec(rollout(prompt(token_ids=common_pb2.TokenIds(ids=[VOCAB]))), VOCAB, None),
        "prompts[0].token_ids",
    ),
    (
        lambda: wire.rollout_spec(rollout(prompt(token_ids=common_pb2.TokenIds())), VOCAB, None),
        "prompts[0].token_ids",
    ),
    (
        lambda: wire.rollout_spec(
            rollout(prompt(messages=rollout_pb2.ChatMessages(messages=[common_pb2.ChatMessage(role="x")]))),
            VOCAB,
            None,
        ),
        "prompts[0].messages[0].role",
    ),
    (
        lambda: wire.rollout_spec(rollout(prompt(math=verifier_pb2.MathTask())), VOCAB, None),
        "prompts[0].math.references",
    ),
    (
        lambda: wire.rollout_spec(
            rollout(prompt(code=verifier_pb2.CodeTask(language="cobol", tests=[verifier_pb2.CodeTest()]))),
            VOCAB,
            None,
        ),
        "prompts[0].code.language",
    ),
    (
        lambda: wire.rollout_spec(
            rollout(prompt(code=verifier_pb2.CodeTask(tests=[verifier_pb2.CodeTest()] * 1001))), VOCAB, None
        ),
        "prompts[0].code.tests",
    ),
]


@pytest.mark.parametrize(("parse", "field"), BAD_REQUESTS)
def test_bad_requests_are_refused_naming_the_field(parse, field):
    with pytest.raises(InvalidRequest) as e:
        parse()
    assert e.value.field == field


def test_a_rollout_prompt_without_a_reward_task_is_sampling_only():
    bare = rollout_pb2.RolloutPrompt(prompt_id="p", token_ids=common_pb2.TokenIds(ids=[1]))
    spec = wire.rollout_spec(rollout(bare), VOCAB, None)
    assert spec.prompts[0].reward is None and spec.dynamic is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"early_termination": rollout_pb2.EARLY_TERMINATION_POLICY_LAUNCH_ORDER}, "target_valid_groups"),
        ({"target_valid_groups": 5}, "target_valid_groups"),  # more than the prompts given
        ({"target_valid_groups": 1, "oversampling": 9.0}, "oversampling"),
        (
            {"target_valid_groups": 1, "early_termination": rollout_pb2.EARLY_TERMINATION_POLICY_FIFO},
            "early_termination",
        ),
        ({"scorer": "nohost"}, "scorer"),
        ({"dataset": "d"}, "prompts"),
    ],
)
def test_dynamic_sampling_fields_are_checked(fields, field):
    bare = rollout_pb2.RolloutPrompt(prompt_id="p", token_ids=common_pb2.TokenIds(ids=[1]))
    request = rollout(bare)
    for k, v in fields.items():
        setattr(request, k, v)
    with pytest.raises(InvalidRequest) as e:
        wire.rollout_spec(request, VOCAB, None)
    assert e.value.field == field


def test_good_requests_become_domain_requests():
    g = wire.generate_request(
        generate(text="2+2=", n=3, sampling=S(temperature=0.0, seed=7, stop=["\n"]), request_id="abc"),
        "Generate",
        True,
        None,
    )
    assert g.prompt == Prompt(text="2+2=") and g.n == 3 and g.stream and g.request_id == "abc"
    assert g.sampling.temperature == 0.0 and g.sampling.seed == 7 and g.sampling.stop == ("\n",)
    assert g.sampling.top_p is None  # unset: the pipeline fills in MiMo's default
    c = wire.chat_request(chat(("system", ""), ("user", "hi")), "Chat", False, None)
    assert c.split_reasoning and [m.role for m in c.prompt.messages] == ["system", "user"]
    r = wire.rollout_spec(rollout(prompt(), prompt(prompt_id="p1"), samples_per_prompt=4, mode=2), VOCAB, None)
    assert r.samples_per_prompt == 4 and r.mode is RolloutMode.SYNCHRONOUS and r.target_prompts is None
    assert [p.prompt_id for p in r.prompts] == ["p0", "p1"] and r.prompts[0].reward.kind == "math"


PS = rollout_pb2.PartialSample
BAD_RESUME = [
    (PS(token_ids=[]), "prompts[0].resume.token_ids"),
    (PS(token_ids=[VOCAB], logprobs=[-1.0]), "prompts[0].resume.token_ids"),
    (PS(token_ids=[3, 4], logprobs=[-1.0]), "prompts[0].resume.logprobs"),  # none or one per token
    (PS(token_ids=[3], logprobs=[float("nan")]), "prompts[0].resume.logprobs"),
    (PS(token_ids=[3], logprobs=[0.5]), "prompts[0].resume.logprobs"),
    (PS(token_ids=[3], logprobs=[-1.0], weight_version="v" * 257), "prompts[0].resume.weight_version"),
]


def test_a_partial_sample_that_already_fills_max_new_tokens_is_refused_up_front():
    resume = PS(token_ids=[3, 4], logprobs=[-1.0, -1.0])
    with pytest.raises(InvalidRequest) as e:
        wire.rollout_spec(rollout(prompt(resume=resume), sampling=S(max_new_tokens=2)), VOCAB, None)
    assert e.value.field == "prompts[0].resume.token_ids"


@pytest.mark.parametrize(("resume", "field"), BAD_RESUME)
def test_a_bad_partial_sample_is_refused_naming_the_field(resume, field):
    with pytest.raises(InvalidRequest) as e:
        wire.rollout_spec(rollout(prompt(resume=resume)), VOCAB, None)
    assert e.value.field == field


def test_resuming_with_dynamic_sampling_is_refused_and_a_good_resume_parses():
    resume = PS(sample_index=3, token_ids=[5, 6], logprobs=[-0.5, -1.5], weight_version="7")
    with pytest.raises(InvalidRequest) as e:
        wire.rollout_spec(rollout(prompt(resume=resume), target_valid_groups=1), VOCAB, None)
    assert e.value.field == "prompts"
    spec = wire.rollout_spec(rollout(prompt(resume=resume), partial_rollout=True, min_weight_version="7"), VOCAB, None)
    (p,) = spec.prompts
    assert p.resume is not None and (p.resume.sample_index, p.resume.token_ids, p.resume.logprobs) == (
        3,
        (5, 6),
        (-0.5, -1.5),
    )
    assert spec.partial_rollout and spec.min_weight_version == "7"
