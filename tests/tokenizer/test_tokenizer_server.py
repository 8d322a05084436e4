"""mimo.v1.Tokenizer over real gRPC: ids equal in-process `tokenizers`, chat equals transformers, artifacts, bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from mimo_client.v1 import common_pb2, tokenizer_pb2
from prometheus_client import REGISTRY

from services.text.artifacts import LoadedTokenizer, artifacts_sha256, load_tokenizer_dir, save_artifact_chunks
from tests.support.tokenizer_dirs import CORPUS, TEST_LIMITS

CONVERSATIONS = [
    [{"role": "system", "content": ""}, {"role": "user", "content": "What is 1+1? 请回答。"}],
    [{"role": "user", "content": "Hi 👋"}],
    [
        {"role": "system", "content": "You are MiMo."},
        {"role": "user", "content": "def f(x):\n    return x"},
        {"role": "assistant", "content": "<think>\nfine\n</think>\nIt returns x."},
        {"role": "user", "content": "  and   whitespace\n\n"},
    ],
]


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def chat_request(messages: list[dict[str, str]], add_generation_prompt: bool) -> tokenizer_pb2.ApplyChatTemplateRequest:
    pb_messages = [common_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in messages]
    return tokenizer_pb2.ApplyChatTemplateRequest(messages=pb_messages, add_generation_prompt=add_generation_prompt)


@pytest.mark.parametrize("add_special_tokens", [False, True])
async def test_tokenize_ids_and_offsets_equal_in_process_tokenizers(stub, loaded: LoadedTokenizer, add_special_tokens):
    request = tokenizer_pb2.TokenizeRequest(texts=CORPUS, add_special_tokens=add_special_tokens, return_offsets=True)
    response = await stub.Tokenize(request, timeout=10)
    expected = loaded.tokenizer.encode_batch(CORPUS, add_special_tokens=add_special_tokens)
    assert [list(e.ids) for e in response.encodings] == [e.ids for e in expected]
    assert [[(o.start, o.end) for o in e.offsets] for e in response.encodings] == [e.offsets for e in expected]
    assert any(len(e.ids) > 0 for e in response.encodings)
    again = await stub.Tokenize(tokenizer_pb2.TokenizeRequest(texts=CORPUS, add_special_tokens=add_special_tokens))
    assert [list(e.ids) for e in again.encodings] == [e.ids for e in expected]
    assert not any(e.offsets for e in again.encodings)  # offsets only on request, also from the cache


async def test_special_tokens_in_text_become_single_ids(stub, loaded: LoadedTokenizer):
    response = await stub.Tokenize(tokenizer_pb2.TokenizeRequest(texts=["<|im_start|>user<|im_end|>"]), timeout=10)
    ids = list(response.encodings[0].ids)
    assert ids[0] == loaded.tokenizer.token_to_id("<|im_start|>")
    assert ids[-1] == loaded.tokenizer.token_to_id("<|im_end|>")
    assert not response.encodings[0].offsets  # only on request


async def test_count_tokens_matches_tokenize(stub, loaded: LoadedTokenizer):
    response = await stub.CountTokens(tokenizer_pb2.CountTokensRequest(texts=CORPUS), timeout=10)
    expected = [len(e.ids) for e in loaded.tokenizer.encode_batch(CORPUS, add_special_tokens=False)]
    assert list(response.counts) == expected
    assert response.total == sum(expected)


@pytest.mark.parametrize("skip_special_tokens", [False, True])
async def test_detokenize_equals_in_process_decode(stub, loaded: LoadedTokenizer, skip_special_tokens):
    sequences = [e.ids for e in loaded.tokenizer.encode_batch(CORPUS)]
    request = tokenizer_pb2.DetokenizeRequest(
        sequences=[common_pb2.TokenIds(ids=ids) for ids in sequences], skip_special_tokens=skip_special_tokens
    )
    response = await stub.Detokenize(request, timeout=10)
    assert list(response.texts) == loaded.tokenizer.decode_batch(sequences, skip_special_tokens=skip_special_tokens)
    if not skip_special_tokens:
        assert response.texts[5] == CORPUS[5]  # special tokens survive the round trip


@pytest.mark.parametrize("add_generation_prompt", [True, False])
async def test_chat_template_equals_transformers(stub, model_dir: Path, add_generation_prompt):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(model_dir))
    for messages in CONVERSATIONS:
        response = await stub.ApplyChatTemplate(chat_request(messages, add_generation_prompt), timeout=10)
        text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        ids = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)["input_ids"]
        assert response.text == text
        assert list(response.ids) == list(ids)


async def test_empty_system_prompt_is_an_empty_turn_and_no_system_gets_the_default(stub):
    empty = await stub.ApplyChatTemplate(chat_request(CONVERSATIONS[0], True), timeout=10)
    assert empty.text.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\nWhat is 1+1?")
    assert empty.text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    default = await stub.ApplyChatTemplate(chat_request(CONVERSATIONS[1], False), timeout=10)
    assert default.text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")


async def test_repeated_prompts_come_from_the_cache(stub):
    request = chat_request([{"role": "user", "content": "a prompt sampled 16 times for GRPO"}], True)
    first = await stub.ApplyChatTemplate(request, timeout=10)
    hits_before = sample("mimo_tokenizer_cache_hits_total")
    again = await asyncio.gather(*(stub.ApplyChatTemplate(request, timeout=10) for _ in range(4)))
    assert all(list(r.ids) == list(first.ids) for r in again)
    assert sample("mimo_tokenizer_cache_hits_total") - hits_before == 4


async def test_info_names_vocabulary_stop_tokens_and_artifact_hash(stub, loaded: LoadedTokenizer, model_dir: Path):
    info = await stub.GetTokenizerInfo(tokenizer_pb2.GetTokenizerInfoRequest(), timeout=10)
    tok = loaded.tokenizer
    assert info.vocab_size == tok.get_vocab_size() and info.model == model_dir.name
    specials = {s.content: s.id for s in info.special_tokens}
    assert specials["<|im_end|>"] == tok.token_to_id("<|im_end|>")
    assert info.eos_token_id == tok.token_to_id("<|im_end|>") and info.pad_token_id == tok.token_to_id("<|endoftext|>")
    assert not info.HasField("bos_token_id")
    assert tok.token_to_id("<|im_end|>") in info.stop_token_ids
    on_disk = {name: (model_dir / name).read_bytes() for name in info.artifact_files}
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(info.artifact_files)
    assert info.artifacts_sha256 == artifacts_sha256(on_disk)


async def test_artifacts_stream_rebuilds_the_same_tokenizer(stub, loaded: LoadedTokenizer, model_dir: Path, tmp_path):
    chunks = [c async for c in stub.GetTokenizerArtifacts(tokenizer_pb2.GetTokenizerArtifactsRequest(), timeout=10)]
    assert len([c for c in chunks if c.file_name == "tokenizer.json"]) > 1  # 4 KiB chunks in the test server
    digest = save_artifact_chunks(chunks, tmp_path / "cache")
    assert digest == loaded.info.artifacts_sha256
    for name in loaded.info.artifact_files:
        assert (tmp_path / "cache" / name).read_bytes() == (model_dir / name).read_bytes()
    copy = load_tokenizer_dir(tmp_path / "cache")
    assert copy.info.artifacts_sha256 == loaded.info.artifacts_sha256
    assert [e.ids for e in copy.tokenizer.encode_batch(CORPUS)] == [
        e.ids for e in loaded.tokenizer.encode_batch(CORPUS)
    ]


async def test_concurrent_requests_all_get_their_own_ids(stub, loaded: LoadedTokenizer):
    texts = [f"request {i}: {CORPUS[i % len(CORPUS)]}" for i in range(40)]
    responses = await asyncio.gather(
        *(
            stub.Tokenize(tokenizer_pb2.TokenizeRequest(texts=[t], add_special_tokens=i % 2 == 0))
            for i, t in enumerate(texts)
        )
    )
    for i, (text, response) in enumerate(zip(texts, responses, strict=True)):
        assert list(response.encodings[0].ids) == loaded.tokenizer.encode(text, add_special_tokens=i % 2 == 0).ids


async def test_tokens_are_counted_in_metrics(stub):
    before = sample("mimo_tokenizer_tokens_total", {"op": "count"})
    response = await stub.CountTokens(tokenizer_pb2.CountTokensRequest(texts=["count these tokens please"]))
    assert sample("mimo_tokenizer_tokens_total", {"op": "count"}) - before == response.total > 0


async def expect_invalid(call, *needles: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for needle in needles:
        assert needle in info.value.details()


async def test_bad_input_is_invalid_argument_naming_field_and_limit(stub):
    too_many = ["x"] * (TEST_LIMITS.max_batch_size + 1)
    await expect_invalid(stub.Tokenize(tokenizer_pb2.TokenizeRequest(texts=too_many)), "texts", "max_batch_size=64")
    too_long = ["ok", "好" * 2000]  # 6000 bytes > 4096
    await expect_invalid(
        stub.CountTokens(tokenizer_pb2.CountTokensRequest(texts=too_long)), "texts[1]", "max_text_bytes=4096"
    )
    await expect_invalid(stub.Tokenize(tokenizer_pb2.TokenizeRequest()), "texts: empty")
    seqs = [common_pb2.TokenIds(ids=[1, 2, 10**7])]
    await expect_invalid(
        stub.Detokenize(tokenizer_pb2.DetokenizeRequest(sequences=seqs)), "sequences[0].ids[2]", "10000000"
    )
    await expect_invalid(stub.ApplyChatTemplate(chat_request([], True)), "messages: empty")
    await expect_invalid(
        stub.ApplyChatTemplate(chat_request([{"role": "wizard", "content": "x"}], True)), "messages[0].role"
    )
    long_chat = [{"role": "user", "content": "y" * 3000}] * 2
    await expect_invalid(stub.ApplyChatTemplate(chat_request(long_chat, True)), "messages", "max_text_bytes=4096")
    # the server is still fine afterwards
    assert (await stub.CountTokens(tokenizer_pb2.CountTokensRequest(texts=["still serving"]))).total > 0
