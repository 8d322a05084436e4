"""The mimo.v1.Tokenizer servicer: proto in, domain calls (encoder, chat template, limits), proto out."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from mimo_client.v1 import common_pb2, tokenizer_pb2, tokenizer_pb2_grpc

from services.common.server import Service
from services.text.artifacts import LoadedTokenizer, file_sha256
from services.text.chat import ChatTemplate, ChatTemplateError, Message
from services.tokenizer.encoder import BatchEncoder, EncodedText, PromptCache
from services.tokenizer.limits import InvalidInput, Limits, check_messages, check_sequences, check_texts
from services.tokenizer.metrics import TokenizerMetrics

SERVICE_NAME = tokenizer_pb2.DESCRIPTOR.services_by_name["Tokenizer"].full_name
CHUNK_BYTES = 1 << 20

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]


def _rejecting_bad_input(method: Handler[Request, Response]) -> Handler[Request, Response]:
    """Turn InvalidInput and template errors into INVALID_ARGUMENT with their message."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await method(self, request, context)
        except InvalidInput as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except ChatTemplateError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"messages: the chat template rejected them: {e}")
        raise AssertionError("unreachable: abort raises")

    return wrapper


def _encoding_pb(encoded: EncodedText, with_offsets: bool) -> tokenizer_pb2.Encoding:
    if not with_offsets or encoded.offsets is None:
        return tokenizer_pb2.Encoding(ids=encoded.ids)
    offsets = [tokenizer_pb2.Offset(start=s, end=e) for s, e in encoded.offsets]
    return tokenizer_pb2.Encoding(ids=encoded.ids, offsets=offsets)


def _messages(messages: Sequence[common_pb2.ChatMessage]) -> list[Message]:
    return [
        Message(m.role, m.content, m.reasoning_content if m.HasField("reasoning_content") else None) for m in messages
    ]


def _info_pb(loaded: LoadedTokenizer) -> tokenizer_pb2.TokenizerInfo:
    info = loaded.info
    return tokenizer_pb2.TokenizerInfo(
        model=info.model,
        vocab_size=info.vocab_size,
        special_tokens=[tokenizer_pb2.SpecialToken(content=c, id=i) for c, i in info.special_tokens],
        stop_token_ids=info.stop_token_ids,
        eos_token_id=info.eos_token_id,
        pad_token_id=info.pad_token_id,
        bos_token_id=info.bos_token_id,
        artifacts_sha256=info.artifacts_sha256,
        model_max_length=info.model_max_length,
        artifact_files=info.artifact_files,
    )


class TokenizerServicer(tokenizer_pb2_grpc.TokenizerServicer):
    """Tokenize, detokenize, chat templates, counts, info and the artifact files of one tokenizer."""

    def __init__(
        self,
        loaded: LoadedTokenizer,
        encoder: BatchEncoder,
        limits: Limits,
        metrics: TokenizerMetrics,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self._loaded = loaded
        self._template = ChatTemplate(loaded.chat_template, loaded.template_tokens)
        self._encoder = encoder
        self._limits = limits
        self._metrics = metrics
        self._chunk_bytes = chunk_bytes
        self._info = _info_pb(loaded)
        self._file_sha256 = {name: file_sha256(data) for name, data in loaded.files.items()}

    def _observe(self, op: str, num_texts: int, num_tokens: int) -> None:
        self._metrics.texts.labels(op).inc(num_texts)
        self._metrics.tokens.labels(op).inc(num_tokens)

    @_rejecting_bad_input
    async def Tokenize(
        self, request: tokenizer_pb2.TokenizeRequest, context: grpc.aio.ServicerContext
    ) -> tokenizer_pb2.TokenizeResponse:
        check_texts(request.texts, self._limits)
        encoded = await self._encoder.encode(list(request.texts), request.add_special_tokens, request.return_offsets)
        self._observe("encode", len(encoded), sum(len(e.ids) for e in encoded))
        return tokenizer_pb2.TokenizeResponse(encodings=[_encoding_pb(e, request.return_offsets) for e in encoded])

    @_rejecting_bad_input
    async def Detokenize(
        self, request: tokenizer_pb2.DetokenizeRequest, context: grpc.aio.ServicerContext
    ) -> tokenizer_pb2.DetokenizeResponse:
        sequences = [list(s.ids) for s in request.sequences]
        check_sequences(sequences, self._info.vocab_size, self._limits)
        texts = await self._encoder.decode(sequences, request.skip_special_tokens)
        self._observe("decode", len(texts), sum(map(len, sequences)))
        return tokenizer_pb2.DetokenizeResponse(texts=texts)

    @_rejecting_bad_input
    async def ApplyChatTemplate(
        self, request: tokenizer_pb2.ApplyChatTemplateRequest, context: grpc.aio.ServicerContext
    ) -> tokenizer_pb2.ApplyChatTemplateResponse:
        messages = _messages(request.messages)
        check_messages(messages, self._limits)
        text = await asyncio.to_thread(self._template.render, messages, request.add_generation_prompt)
        [encoded] = await self._encoder.encode([text], add_special_tokens=False)
        self._observe("chat", 1, len(encoded.ids))
        return tokenizer_pb2.ApplyChatTemplateResponse(text=text, ids=encoded.ids)

    @_rejecting_bad_input
    async def CountTokens(
        self, request: tokenizer_pb2.CountTokensRequest, context: grpc.aio.ServicerContext
    ) -> tokenizer_pb2.CountTokensResponse:
        check_texts(request.texts, self._limits)
        encoded = await self._encoder.encode(list(request.texts), request.add_special_tokens)
        counts = [len(e.ids) for e in encoded]
        self._observe("count", len(counts), sum(counts))
        return tokenizer_pb2.CountTokensResponse(counts=counts, total=sum(counts))

    async def GetTokenizerInfo(
        self, request: tokenizer_pb2.GetTokenizerInfoRequest, context: grpc.aio.ServicerContext
    ) -> tokenizer_pb2.TokenizerInfo:
        return self._info

    async def GetTokenizerArtifacts(
        self, request: tokenizer_pb2.GetTokenizerArtifactsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tokenizer_pb2.ArtifactChunk]:
        """Every artifact file in chunks of `chunk_bytes`; the last chunk of each carries the file's sha256."""
        digest = self._info.artifacts_sha256
        for name, data in self._loaded.files.items():
            offsets = range(0, max(len(data), 1), self._chunk_bytes)
            for offset in offsets:
                is_last = offset == offsets[-1]
                yield tokenizer_pb2.ArtifactChunk(
                    file_name=name,
                    offset=offset,
                    data=data[offset : offset + self._chunk_bytes],
                    is_last_chunk=is_last,
                    file_sha256=self._file_sha256[name] if is_last else "",
                    artifacts_sha256=digest,
                )


def build_service(
    loaded: LoadedTokenizer,
    limits: Limits,
    metrics: TokenizerMetrics,
    cache_entries: int = 4096,
    cache_tokens: int = 4 << 20,
    chunk_bytes: int = CHUNK_BYTES,
) -> Service:
    """The tokenizer Service for services.common.server: the servicer, its encoder thread, and closing it."""
    encoder = BatchEncoder(loaded.tokenizer, PromptCache(cache_entries, cache_tokens), metrics)
    servicer = TokenizerServicer(loaded, encoder, limits, metrics, chunk_bytes)

    async def close_encoder() -> None:
        encoder.close()

    return Service(
        register=lambda server: tokenizer_pb2_grpc.add_TokenizerServicer_to_server(servicer, server),
        names=[SERVICE_NAME],
        on_stop=[close_encoder],
    )
