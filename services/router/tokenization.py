"""The router's tokenizer: artifacts fetched from the tokenizer service, cached on disk by hash, used in-process;
chat prompts rendered by the service so the template has one source."""

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

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TokenizerSnapshot:
    """One version of the artifacts, loaded."""

    tokenizer: Tokenizer
    info: tokenizer_pb2.TokenizerInfo
    directory: Path

    @property
    def vocab_size(self) -> int:
        return self.info.vocab_size

    @property
    def stop_token_ids(self) -> list[int]:
        return list(self.info.stop_token_ids)


class RouterTokenizer:
    """Keeps the current artifacts; `refresh()` refetches when the service's hash changes."""

    def __init__(self, target: str, cache_dir: Path | None = None, refresh_s: float = 30.0) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = tokenizer_pb2_grpc.TokenizerStub(self._channel)
        self._cache_dir = cache_dir or Path(tempfile.gettempdir()) / f"mimo-serve-tokenizer-{os.getuid()}"
        self._refresh_s = refresh_s
        self._task: asyncio.Task[None] | None = None
        self.current: TokenizerSnapshot | None = None

    async def start(self, timeout_s: float = 60.0) -> None:
        """Fetch the artifacts (waiting for the service up to `timeout_s`), then watch for changes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                await self.refresh()
                break
            except grpc.aio.AioRpcError as e:
                if loop.time() > deadline:
                    raise RuntimeError(f"--tokenizer: tokenizer service unreachable: {e.details()}") from e
                await asyncio.sleep(0.5)
        self._task = asyncio.create_task(self._watch())

    async def refresh(self) -> bool:
        info = await self._stub.GetTokenizerInfo(tokenizer_pb2.GetTokenizerInfoRequest(), timeout=10)
        if self.current is not None and self.current.info.artifacts_sha256 == info.artifacts_sha256:
            return False
        directory = self._cache_dir / info.artifacts_sha256[:16]
        if not (directory / "tokenizer.json").exists():
            await self._download(directory)
        tokenizer = await asyncio.to_thread(Tokenizer.from_file, str(directory / "tokenizer.json"))
        self.current = TokenizerSnapshot(tokenizer, info, directory)
        log.info("tokenizer loaded", extra={"sha256": info.artifacts_sha256[:16], "vocab_size": info.vocab_size})
        return True

    async def _download(self, directory: Path) -> None:
        partial = directory.with_name(directory.name + f".part{os.getpid()}")
        partial.mkdir(parents=True, exist_ok=True)
        files: dict[str, bytearray] = {}
        async for chunk in self._stub.GetTokenizerArtifacts(tokenizer_pb2.GetTokenizerArtifactsRequest(), timeout=60):
            files.setdefault(chunk.file_name, bytearray()).extend(chunk.data)
        for name, data in files.items():
            (partial / Path(name).name).write_bytes(bytes(data))
        with contextlib.suppress(OSError):
            partial.rename(directory)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except grpc.aio.AioRpcError as e:
                log.warning("tokenizer refresh failed", extra={"error": e.details()})

    @property
    def snapshot(self) -> TokenizerSnapshot:
        if self.current is None:
            raise RuntimeError("tokenizer not loaded")
        return self.current

    def encode(self, text: str) -> list[int]:
        return self.snapshot.tokenizer.encode(text, add_special_tokens=False).ids

    async def apply_chat_template(
        self, messages: Sequence[common_pb2.ChatMessage], timeout_s: float | None
    ) -> list[int]:
        request = tokenizer_pb2.ApplyChatTemplateRequest(messages=messages, add_generation_prompt=True)
        response = await self._stub.ApplyChatTemplate(request, timeout=timeout_s)
        return list(response.ids)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self._channel.close()
