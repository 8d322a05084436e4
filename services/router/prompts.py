"""Prompts to token ids, in-process, from one loaded version of the tokenizer service's artifacts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

from services.router.domain import InvalidRequest, Message
from services.text.artifacts import LoadedTokenizer
from services.text.chat import ChatTemplate, ChatTemplateError
from services.text.chat import Message as TemplateMessage


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

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def render_chat(self, messages: Sequence[Message]) -> str:
        """The chat prompt, rendered in-process with the service's own template (measured 3-5x cheaper than an
        ApplyChatTemplate call: see the router's issue note)."""
        try:
            return self.template.render(
                [TemplateMessage(m.role, m.content, m.reasoning_content) for m in messages], True
            )
        except ChatTemplateError as e:
            raise InvalidRequest("messages", str(e)) from e

    def chat_ids(self, messages: Sequence[Message]) -> list[int]:
        return self.encode(self.render_chat(messages))
