"""The router's tokenizer: the tokenizer service's artifacts, fetched once (and again when their hash changes),
cached on disk by hash and used in-process for encoding, chat templating and detokenization."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from mimo_client.v1 import common_pb2, tokenizer_pb2, tokenizer_pb2_grpc
from tokenizers import Tokenizer

from services.common.server import StartupError
from services.router.requests import InvalidRequest
from services.text.artifacts import ArtifactsError, LoadedTokenizer, load_tokenizer_dir, save_artifact_chunks
from services.text.chat import ChatTemplate, ChatTemplateError, Message

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TokenizerSnapshot:
    """One version of the artifacts, loaded."""

    loaded: LoadedTokenizer
    template: ChatTemplate

    @property
    def tokenizer(self) -> Tokenizer:
        return self.loaded.tokenizer

    @property
    def vocab_size(self) -> int:
        return self.loaded.info.vocab_size

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        return self.loaded.info.stop_token_ids

    @property
    def sha256(self) -> str:
        return self.loaded.info.artifacts_sha256


class RouterTokenizer:
    """Keeps the current artifacts; `refresh()` refetches when the service's hash changes."""

    def __init__(self, target: str, cache_dir: Path | None = None, refresh_s: float = 30.0) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = tokenizer_pb2_grpc.TokenizerStub(self._channel)
        self._cache_dir = cache_dir or Path(tempfile.gettempdir()) / f"mimo-serve-tokenizer-{os.getuid()}"
        self._refresh_s = refresh_s
        self._task: asyncio.Task[None] | None = None
        self.current: TokenizerSnapshot | None = None

    async def start(self, timeout_s: float = 60.0) -> None:  # StartupError when the service never answers
        """Fetch the artifacts (waiting for the service up to `timeout_s`), then watch for changes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                await self.refresh()
                break
            except grpc.aio.AioRpcError as e:
                if loop.time() > deadline:
                    raise StartupError(
                        f"--tokenizer: tokenizer service unreachable after {timeout_s:.0f}s: {e.details()}"
                    ) from e
                await asyncio.sleep(0.5)
        self._task = asyncio.create_task(self._watch())

    async def refresh(self) -> bool:
        """Load the service's current artifacts if their hash changed; True when it did."""
        info = await self._stub.GetTokenizerInfo(tokenizer_pb2.GetTokenizerInfoRequest(), timeout=10)
        if self.current is not None and self.current.sha256 == info.artifacts_sha256:
            return False
        directory = self._cache_dir / info.artifacts_sha256[:32]
        if not (directory / "tokenizer.json").exists():
            stream = self._stub.GetTokenizerArtifacts(tokenizer_pb2.GetTokenizerArtifactsRequest(), timeout=60)
            chunks = [chunk async for chunk in stream]
            partial = directory.with_name(f"{directory.name}.part{os.getpid()}")
            await asyncio.to_thread(save_artifact_chunks, chunks, partial)
            with contextlib.suppress(OSError):
                partial.rename(directory)
        loaded = await asyncio.to_thread(load_tokenizer_dir, directory)
        self.current = TokenizerSnapshot(loaded, ChatTemplate(loaded.chat_template, loaded.template_tokens))
        log.info(
            "tokenizer loaded", extra={"sha256": loaded.info.artifacts_sha256[:16], "vocab": loaded.info.vocab_size}
        )
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except (grpc.aio.AioRpcError, ArtifactsError) as e:
                log.warning("tokenizer refresh failed", extra={"error": str(e)[:200]})

    @property
    def snapshot(self) -> TokenizerSnapshot:
        if self.current is None:
            raise RuntimeError("tokenizer not loaded")
        return self.current

    def encode(self, text: str) -> list[int]:
        return self.snapshot.tokenizer.encode(text, add_special_tokens=False).ids

    def chat_ids(self, messages: Sequence[common_pb2.ChatMessage]) -> list[int]:
        """The prompt ids for a chat, rendered in-process with the service's own template (measured faster than
        an ApplyChatTemplate call: see the router's issue note)."""
        try:
            text = self.snapshot.template.render([Message(m.role, m.content) for m in messages], True)
        except ChatTemplateError as e:
            raise InvalidRequest("messages", str(e)) from e
        return self.encode(text)

    async def chat_ids_remote(self, messages: Sequence[common_pb2.ChatMessage], timeout_s: float | None) -> list[int]:
        """The same ids from the tokenizer service (kept for comparison and as a cross-check in tests)."""
        request = tokenizer_pb2.ApplyChatTemplateRequest(messages=messages, add_generation_prompt=True)
        return list((await self._stub.ApplyChatTemplate(request, timeout=timeout_s)).ids)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self._channel.close()
