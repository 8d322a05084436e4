"""The router's client of the tokenizer service: the tokenizer service's artifacts, fetched once (and again when their hash changes),
cached on disk by hash and used in-process for encoding, chat templating and detokenization."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from pathlib import Path

import grpc
from mimo_client.v1 import tokenizer_pb2, tokenizer_pb2_grpc

from services.common.server import StartupError
from services.common.tracing import client_interceptors
from services.router.domain import Unavailable
from services.router.prompts import TokenizerSnapshot
from services.text.artifacts import ArtifactsError, load_tokenizer_dir, save_artifact_chunks
from services.text.chat import ChatTemplate

log = logging.getLogger(__name__)


class RouterTokenizer:
    """Keeps the current artifacts; `refresh()` refetches when the service's hash changes. Before the first load,
    `snapshot` raises Unavailable (UNAVAILABLE / HTTP 503), never a bare error."""

    def __init__(self, target: str, cache_dir: Path | None = None, refresh_s: float = 30.0) -> None:
        # round_robin: every replica behind a headless Service (or a multi-address target) takes its share
        self._channel = grpc.aio.insecure_channel(
            target, options=[("grpc.lb_policy_name", "round_robin")], interceptors=client_interceptors()
        )
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
            raise Unavailable("the router has not loaded its tokenizer yet; retry shortly")
        return self.current

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self._channel.close()
