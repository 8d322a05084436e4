"""OpenAI JSON → domain requests, in process: every field's bad values are refused naming the OpenAI parameter,
and the domain errors map to OpenAI's statuses and error types."""

from __future__ import annotations

import json

import pytest

from services.router import domain as d
from services.router import http_wire
from services.router.http_render import http_error

MSG = [{"role": "user", "content": "hi"}]


def chat(**fields):
    return {"model": "mimo", "messages": MSG, **fields}


def completion(**fields):
    return {"model": "mimo", "prompt": "hi", **fields}


BAD_CHAT = [
    (chat(messages=[]), "messages"),
    (chat(messages="hi"), "messages"),
    (chat(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
    (chat(messages=[{"role": 3, "content": "x"}]), "messages[0].role"),
    (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    (chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]), "messages[0].content[0]"),
    (chat(messages=["hi"]), "messages[0]"),
    (chat(model=7), "model"),
    (chat(temperature=-0.5), "temperature"),
    (chat(temperature="hot"), "temperature"),
    (chat(temperature=True), "temperature"),
    (chat(top_p=0), "top_p"),
    (chat(top_p=1.5), "top_p"),
    (chat(top_k=-3), "top_k"),
    (chat(min_p=2), "min_p"),
    (chat(repetition_penalty=0), "repetition_penalty"),
    (chat(frequency_penalty=3), "frequency_penalty"),
    (chat(presence_penalty=-2.5), "presence_penalty"),
    (chat(max_tokens=0), "max_tokens"),
    (chat(max_tokens=1.5), "max_tokens"),
    (chat(max_completion_tokens=-1), "max_completion_tokens"),
    (chat(n=0), "n"),
    (chat(n=65), "n"),
    (chat(n="two"), "n"),
    (chat(stop=5), "stop"),
    (chat(stop=[""]), "stop"),
    (chat(stop=["x"] * 17), "stop"),
    (chat(seed=-1), "seed"),
    (chat(seed="s"), "seed"),
    (chat(logprobs="yes"), "logprobs"),
    (chat(top_logprobs=3), "top_logprobs"),
    (chat(logprobs=True, top_logprobs=21), "top_logprobs"),
    (chat(logprobs=True, top_logprobs=-1), "top_logprobs"),
    (chat(stream="yes"), "stream"),
    (chat(stream_options={"include_usage": True}), "stream_options"),
    (chat(stream=True, stream_options="x"), "stream_options"),
    (chat(stream=True, stream_options={"include_usage": 1}), "include_usage"),
    (chat(user=5), "user"),
    (chat(ignore_eos="no"), "ignore_eos"),
    (chat(skip_special_tokens=0), "skip_special_tokens"),
    (chat(separate_reasoning="no"), "separate_reasoning"),
    (chat(response_format="json"), "response_format"),
    (chat(response_format={"type": "xml"}), "response_format.type"),
    (chat(response_format={"type": "json_schema"}), "response_format.json_schema"),
    (chat(response_format={"type": "json_schema", "json_schema": {"schema": []}}), "response_format.json_schema"),
    (chat(response_format={"type": "json_object"}, regex="a+"), "response_format"),
    (chat(regex=5), "regex"),
    (chat(regex=""), "response_format"),
    (chat(tools=[{"type": "function"}]), "tools"),
    (chat(logit_bias={"5": 1}), "logit_bias"),
    (chat(best_of=3), "best_of"),
    (chat(stop_token_ids=[-1]), "stop_token_ids"),
    (chat(stop_token_ids="1"), "stop_token_ids"),
    ([1, 2], "body"),
]

BAD_COMPLETION = [
    ({"model": "mimo"}, "prompt"),
    (completion(prompt=""), "prompt"),
    (completion(prompt=[]), "prompt"),
    (completion(prompt=["a", "b"]), "prompt"),
    (completion(prompt=[1, -2]), "prompt"),
    (completion(prompt=[1, "a"]), "prompt"),
    (completion(prompt=5), "prompt"),
    (completion(prompt="x" * 1_000_001), "prompt"),
    (completion(logprobs=-1), "logprobs"),
    (completion(logprobs=21), "logprobs"),
    (completion(echo="yes"), "echo"),
    (completion(echo=True, stream=True), "echo"),
    (completion(suffix="!"), "suffix"),
    (completion(max_tokens=0), "max_tokens"),
    (completion(temperature=float("nan")), "temperature"),
]


@pytest.mark.parametrize(("body", "param"), BAD_CHAT, ids=[p for _, p in BAD_CHAT])
def test_bad_chat_fields_name_the_parameter(body, param):
    with pytest.raises(d.InvalidRequest) as e:
        http_wire.chat_request(body)
    assert http_wire.param_of(e.value, True, body if isinstance(body, dict) else None) == param


@pytest.mark.parametrize(("body", "param"), BAD_COMPLETION, ids=[p for _, p in BAD_COMPLETION])
def test_bad_completion_fields_name_the_parameter(body, param):
    with pytest.raises(d.InvalidRequest) as e:
        http_wire.completion_request(body)
    assert http_wire.param_of(e.value, False, body) == param


def test_a_full_chat_request_maps_every_field():
    body = chat(
        messages=[
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": None, "reasoning_content": "hm"},
        ],
        max_completion_tokens=9, temperature=0.2, top_p=0.5, n=2, stop="END", seed=4, presence_penalty=0.5,
        frequency_penalty=0.25, logprobs=True, top_logprobs=2, user="u", top_k=5, min_p=0.1,
        repetition_penalty=1.1, ignore_eos=True, skip_special_tokens=False, stream=True,
        stream_options={"include_usage": True}, separate_reasoning=False,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    )  # fmt: skip
    req = http_wire.chat_request(body, "abc")
    g, s = req.generation, req.generation.sampling
    assert [m.role for m in g.prompt.messages] == ["system", "user", "assistant"]
    assert g.prompt.messages[1].content == "ab" and g.prompt.messages[2].reasoning_content == "hm"
    assert (s.max_new_tokens, s.temperature, s.top_p, s.stop, s.seed) == (9, 0.2, 0.5, ("END",), 4)
    assert (s.presence_penalty, s.frequency_penalty, s.top_k, s.min_p, s.repetition_penalty) == (0.5, 0.25, 5, 0.1, 1.1)
    assert s.ignore_eos and not s.skip_special_tokens and json.loads(s.json_schema) == {"type": "object"}
    assert (g.n, g.return_logprobs, g.top_logprobs, g.stream, g.split_reasoning) == (2, True, 2, True, False)
    assert g.request_id == "abc" and g.method == "http.chat.stream" and req.include_usage


def test_unset_fields_keep_mimo_defaults_for_the_pipeline():
    g = http_wire.chat_request(chat()).generation
    assert g.sampling.temperature is None and g.sampling.top_p is None  # the pipeline fills in 0.6 / 0.95
    assert g.defaults == d.CHAT_DEFAULTS and g.split_reasoning and not g.stream


def test_json_object_and_token_id_prompts():
    req = http_wire.completion_request(completion(prompt=[[5, 6]], response_format={"type": "json_object"}))
    assert req.generation.prompt.token_ids == (5, 6)
    assert json.loads(req.generation.sampling.json_schema) == {"type": "object"}


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (d.InvalidRequest("temperature", "bad"), 400, "invalid_request_error"),
        (d.Unauthenticated("no"), 401, "authentication_error"),
        (d.UnknownModel("x", "mimo"), 404, "invalid_request_error"),
        (d.Rejected("queue_full", "full", 2.0), 429, "rate_limit_error"),
        (d.Unavailable("none"), 503, "service_unavailable"),
        (d.DeadlineExceeded("late"), 504, "timeout"),
    ],
)
def test_domain_errors_map_to_openai_statuses(error, status, kind):
    e = http_error(error)
    assert e.status == status and e.body["error"]["type"] == kind
    assert set(e.body["error"]) == {"message", "type", "param", "code"}
    assert (e.retry_after_s is not None) == (status == 429)


def test_the_grpc_edge_maps_the_same_constraints_and_refuses_the_same_values():
    from mimo_client.v1 import common_pb2

    from services.router import wire

    s = wire.sampling_of(common_pb2.SamplingParams(regex="[0-9]+", skip_special_tokens=False))
    assert s.regex == "[0-9]+" and s.json_schema is None and not s.skip_special_tokens
    for bad, field in (
        (common_pb2.SamplingParams(json_schema="[1]"), "sampling.json_schema"),
        (common_pb2.SamplingParams(json_schema="{not json"), "sampling.json_schema"),
        (common_pb2.SamplingParams(regex=""), "sampling.constraint"),
    ):
        with pytest.raises(d.InvalidRequest) as e:
            wire.sampling_of(bad)
        assert e.value.field == field
    with pytest.raises(d.InvalidRequest):  # the HTTP edge refuses the same schema
        http_wire.chat_request(chat(response_format={"type": "json_schema", "json_schema": {"schema": [1]}}))
