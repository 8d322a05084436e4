"""The whole stack on the tiny MiMo: router + tokenizer service + two torch workers, real processes over loopback.

The router's chat answer must equal the engine's own greedy answer for the same prompt ids."""

from __future__ import annotations

import grpc
import pytest
import pytest_asyncio
from mimo_client.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

from services.stack import Stack, random_ports_plan
from services.text.artifacts import load_tokenizer_dir
from services.text.chat import ChatTemplate, Message

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

QUESTIONS = ["What is 47 + 38?", "What is 27 * 6?", "Solve for x: 7x + 12 = 68.", "Compute 91 - 46."]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tiny_model, tmp_path_factory):
    plan = random_ports_plan(tiny_model, engine="torch", num_workers=2)
    stack = Stack([s for s in plan.specs() if s.name != "verifier"], tmp_path_factory.mktemp("logs"))
    await stack.start()
    yield stack
    await stack.stop()


def messages(question: str) -> list[common_pb2.ChatMessage]:
    return [common_pb2.ChatMessage(role="system", content=""), common_pb2.ChatMessage(role="user", content=question)]


async def direct_greedy(target: str, ids: list[int], max_new_tokens: int) -> list[int]:
    """The engine used directly, over its own protocol."""
    request = pb.GenerateRequest(
        request_id="direct", tokenized=pb.TokenizedInput(input_ids=ids), stream=False,
        sampling_params=pb.SamplingParams(temperature=0.0, top_p=1.0, top_k=-1, max_new_tokens=max_new_tokens,
                                          repetition_penalty=1.0, stop_token_ids=[2], n=1),
    )  # fmt: skip
    async with grpc.aio.insecure_channel(target) as channel:
        responses = [r async for r in pb_grpc.SglangSchedulerStub(channel).Generate(request, timeout=120)]
    return list(responses[-1].complete.output_ids)


async def test_router_chat_equals_the_engine_used_directly(stack, tiny_model):
    loaded = load_tokenizer_dir(tiny_model)
    template = ChatTemplate(loaded.chat_template, loaded.template_tokens)
    worker = stack.child("worker-0").spec.target
    async with grpc.aio.insecure_channel(stack.child("router").spec.target) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        for question in QUESTIONS:
            sampling = common_pb2.SamplingParams(temperature=0.0, max_new_tokens=400)
            response = await stub.Chat(
                inference_pb2.ChatRequest(messages=messages(question), sampling=sampling), timeout=120
            )
            choice = response.choices[0]
            prompt = template.render([Message("system", ""), Message("user", question)], add_generation_prompt=True)
            ids = loaded.tokenizer.encode(prompt, add_special_tokens=False).ids
            expected = await direct_greedy(worker, ids, 400)
            assert list(choice.token_ids) == [t for t in expected if t != 2] or list(choice.token_ids) == expected
            full = loaded.tokenizer.decode(expected, skip_special_tokens=True)
            assert "\\boxed{" in choice.text and choice.reasoning, full
            assert full.startswith("<think>") and choice.reasoning in full and choice.text in full
            assert choice.finish_reason == common_pb2.FINISH_REASON_STOP
            assert 0 < response.usage.reasoning_tokens < response.usage.completion_tokens


async def test_streamed_chat_splits_reasoning_and_matches_unary(stack):
    async with grpc.aio.insecure_channel(stack.child("router").spec.target) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        request = inference_pb2.ChatRequest(
            messages=messages(QUESTIONS[0]), sampling=common_pb2.SamplingParams(temperature=0.0)
        )
        whole = (await stub.Chat(request, timeout=120)).choices[0]
        reasoning = text = ""
        async for message in stub.ChatStream(request, timeout=120):
            reasoning += message.delta.reasoning
            text += message.delta.text
        assert (reasoning, text) == (whole.reasoning, whole.text)
        assert "\\boxed{85}" in text or "\\boxed{" in text
