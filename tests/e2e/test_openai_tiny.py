"""The OpenAI HTTP API on the tiny MiMo (router + tokenizer + one torch worker, real processes), driven by the real
`openai` SDK: greedy HTTP == greedy gRPC token for token, logprobs, and structured output the engine enforces."""

from __future__ import annotations

import json
import re

import grpc
import jsonschema
import openai
import pytest
import pytest_asyncio
from mimo_client.v1 import common_pb2, inference_pb2, inference_pb2_grpc

from services.stack import Stack, random_ports_plan
from tests.support.router_stack import http_base_url

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "integer"}, "unit": {"type": "string", "enum": ["apples", "pears"]}},
    "required": ["answer", "unit"],
    "additionalProperties": False,
}
QUESTION = "What is 47 + 38?"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tiny_model, tmp_path_factory):
    plan = random_ports_plan(tiny_model, engine="torch", num_workers=1)
    stack = Stack([s for s in plan.specs() if s.name != "verifier"], tmp_path_factory.mktemp("logs"))
    await stack.start()
    yield stack
    await stack.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def client(stack):
    async with openai.AsyncOpenAI(base_url=http_base_url(stack), api_key="unused", max_retries=0) as c:
        yield c


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_greedy_http_has_the_token_ids_of_greedy_grpc(stack, client):
    async with grpc.aio.insecure_channel(stack.child("router").spec.target) as channel:
        request = inference_pb2.ChatRequest(
            messages=[common_pb2.ChatMessage(role="user", content=QUESTION)],
            sampling=common_pb2.SamplingParams(temperature=0.0, max_new_tokens=24),
            return_logprobs=True,
        )
        grpc_reply = await inference_pb2_grpc.InferenceStub(channel).Chat(request, timeout=120)
    reply = await client.chat.completions.create(
        model="mimo", messages=user(QUESTION), temperature=0, max_tokens=24, logprobs=True, top_logprobs=3
    )
    tokens = reply.choices[0].logprobs.content
    expected = grpc_reply.choices[0]
    assert len(tokens) == len(expected.token_ids) == reply.usage.completion_tokens > 0
    # token ids are not in OpenAI's shape; the per-token logprobs of the same ids are
    assert [t.logprob for t in tokens] == pytest.approx([lp.logprob for lp in expected.logprobs], abs=1e-4)
    text = (reply.choices[0].message.reasoning_content or "") + (reply.choices[0].message.content or "")
    assert text == expected.reasoning + expected.text
    assert all(len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob >= t.logprob - 1e-5 for t in tokens)


async def test_streamed_greedy_equals_unary_greedy(client):
    whole = await client.chat.completions.create(model="mimo", messages=user(QUESTION), temperature=0, max_tokens=20)
    stream = await client.chat.completions.create(
        model="mimo", messages=user(QUESTION), temperature=0, max_tokens=20, stream=True
    )
    parts = [
        (c.choices[0].delta.content or "") + (getattr(c.choices[0].delta, "reasoning_content", None) or "")
        async for c in stream
        if c.choices
    ]
    message = whole.choices[0].message
    assert "".join(parts) == (message.content or "") + (message.reasoning_content or "")


async def test_json_schema_output_parses_and_validates(client):
    reply = await client.chat.completions.create(
        model="mimo",
        messages=user("How many apples? Answer in JSON."),
        max_tokens=64,
        temperature=1.0,
        seed=3,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}},
        extra_body={"separate_reasoning": False},
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "stop", choice
    jsonschema.validate(json.loads(choice.message.content), SCHEMA)


async def test_regex_constrains_a_completion(client):
    reply = await client.completions.create(
        model="mimo", prompt="The year was", max_tokens=16, n=3, seed=1, extra_body={"regex": r" [12][0-9]{3}\."}
    )
    assert len(reply.choices) == 3
    for choice in reply.choices:
        assert re.fullmatch(r" [12][0-9]{3}\.", choice.text), choice.text


async def test_a_grammar_that_does_not_compile_is_a_400_naming_the_field(client):
    with pytest.raises(openai.BadRequestError) as e:
        await client.completions.create(model="mimo", prompt="x", max_tokens=4, extra_body={"regex": "("})
    assert e.value.status_code == 400 and e.value.body["param"] == "regex" and "regex" in e.value.message


async def test_the_grpc_api_takes_the_same_json_schema(stack):
    async with grpc.aio.insecure_channel(stack.child("router").spec.target) as channel:
        request = inference_pb2.GenerateRequest(
            text="The answer as JSON:",
            n=2,
            sampling=common_pb2.SamplingParams(max_new_tokens=64, seed=11, json_schema=json.dumps(SCHEMA)),
        )
        reply = await inference_pb2_grpc.InferenceStub(channel).Generate(request, timeout=120)
    for choice in reply.choices:
        assert choice.finish_reason == common_pb2.FINISH_REASON_STOP
        jsonschema.validate(json.loads(choice.text), SCHEMA)
