"""Chat templates render exactly as transformers renders them, also for templates using the sandbox's extras."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest
from mimo_client.v1 import common_pb2, tokenizer_pb2, tokenizer_pb2_grpc

from services.common.config import ServerSettings
from services.common.server import start
from services.text.artifacts import load_tokenizer_dir
from services.text.chat import ChatTemplate, ChatTemplateError, Message
from services.tokenizer.metrics import METRICS
from services.tokenizer.server import build_service
from tests.support.tokenizer_dirs import TEST_LIMITS

# Uses what transformers adds to jinja: namespace, tojson (non-ASCII kept), raise_exception, loop controls,
# {% generation %}, the special-token variables, and reasoning_content.
RICH_TEMPLATE = """{{- bos_token if bos_token is defined else '' -}}
{%- set ns = namespace(turns=0) -%}
{%- for m in messages -%}
  {%- if m.role == 'tool' %}{% break %}{% endif -%}
  {%- if loop.index0 == 0 and m.role == 'assistant' %}{{ raise_exception('the first turn cannot be the assistant') }}{% endif -%}
  {%- set ns.turns = ns.turns + 1 -%}
  <|im_start|>{{ m.role }}
{% if m.reasoning_content is defined %}<think>{{ m.reasoning_content }}</think>{% endif -%}
  {%- if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}{% else %}{{ m.content }}{% endif %}{{ eos_token }}
  {{ {'n': ns.turns, 'c': m.content} | tojson }}
{% endfor -%}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif -%}"""

MESSAGES = [
    Message("system", ""),
    Message("user", 'héllo 你好 😀 "quoted" <tag>'),
    Message("assistant", "answer", reasoning_content="think first"),
    Message("user", "  spaces\n\nand lines  "),
    Message("tool", "never shown"),
    Message("user", "after the break"),
]


@pytest.fixture
def rich_dir(fixture_dir: Path, tmp_path: Path) -> Path:
    directory = Path(shutil.copytree(fixture_dir, tmp_path / "rich"))
    (directory / "chat_template.jinja").write_text(RICH_TEMPLATE)
    return directory


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_rich_template_renders_like_transformers(rich_dir: Path, add_generation_prompt: bool):
    from transformers import AutoTokenizer

    loaded = load_tokenizer_dir(rich_dir)
    ours = ChatTemplate(loaded.chat_template, loaded.template_tokens).render(MESSAGES, add_generation_prompt)
    hf = AutoTokenizer.from_pretrained(str(rich_dir))
    messages = [
        {"role": m.role, "content": m.content}
        | ({"reasoning_content": m.reasoning_content} if m.reasoning_content else {})
        for m in MESSAGES
    ]
    assert ours == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert '"c": "héllo 你好 😀 \\"quoted\\" <tag>"' in ours and "<think>think first</think>" in ours
    assert "never shown" not in ours and "<|im_end|>" in ours


def test_template_cannot_reach_python_internals(fixture_dir: Path):
    template = ChatTemplate("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}", {})
    with pytest.raises(ChatTemplateError):
        template.render([Message("user", "x")], False)
    with pytest.raises(ChatTemplateError):
        ChatTemplate("{% set ns = namespace() %}{% set ns._x = 1 %}", {}).render([Message("user", "x")], False)


async def test_template_refusal_is_invalid_argument_over_grpc(rich_dir: Path):
    settings = ServerSettings(service="tokenizer", listen="127.0.0.1:0", grace_s=1.0)
    running = await start(settings, build_service(load_tokenizer_dir(rich_dir), TEST_LIMITS, METRICS))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = tokenizer_pb2_grpc.TokenizerStub(channel)
            request = tokenizer_pb2.ApplyChatTemplateRequest(
                messages=[common_pb2.ChatMessage(role="assistant", content="x")]
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ApplyChatTemplate(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "the first turn cannot be the assistant" in info.value.details()
    finally:
        await running.drain()
