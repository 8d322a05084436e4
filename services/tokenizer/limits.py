"""Input limits of the tokenizer service, checked before any work; violations name the field and the limit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.text.chat import Message

CHAT_ROLES = frozenset({"system", "user", "assistant", "tool"})


class InvalidInput(ValueError):
    """Bad input, with the request field it concerns (served as INVALID_ARGUMENT)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Limits:
    """How much one request may ask for."""

    max_batch_size: int = 1024  # texts per Tokenize / CountTokens, sequences per Detokenize
    max_text_bytes: int = 1 << 20  # UTF-8 bytes per text; also all message contents of one chat together
    max_messages: int = 1024  # messages per chat
    max_sequence_tokens: int = 1 << 20  # ids per Detokenize sequence


def exceeds_bytes(text: str, limit: int) -> bool:
    """len(text.encode()) > limit, without encoding when the length in characters already settles it."""
    if len(text) > limit:
        return True
    return len(text) * 4 > limit and len(text.encode()) > limit


def check_batch(count: int, limits: Limits, field: str) -> None:
    if count == 0:
        raise InvalidInput(field, "empty")
    if count > limits.max_batch_size:
        raise InvalidInput(
            field, f"{count} items in one request, over the limit max_batch_size={limits.max_batch_size}"
        )


def check_texts(texts: Sequence[str], limits: Limits, field: str = "texts") -> None:
    """At most max_batch_size texts, each at most max_text_bytes."""
    check_batch(len(texts), limits, field)
    for i, text in enumerate(texts):
        if exceeds_bytes(text, limits.max_text_bytes):
            size = len(text.encode())
            raise InvalidInput(f"{field}[{i}]", f"{size} bytes, over the limit max_text_bytes={limits.max_text_bytes}")


def check_sequences(sequences: Sequence[Sequence[int]], vocab_size: int, limits: Limits) -> None:
    """At most max_batch_size sequences of at most max_sequence_tokens ids, every id in the vocabulary."""
    check_batch(len(sequences), limits, "sequences")
    for i, ids in enumerate(sequences):
        if len(ids) > limits.max_sequence_tokens:
            raise InvalidInput(
                f"sequences[{i}].ids",
                f"{len(ids)} ids, over the limit max_sequence_tokens={limits.max_sequence_tokens}",
            )
        if ids and max(ids) >= vocab_size:
            j = next(j for j, token_id in enumerate(ids) if token_id >= vocab_size)
            raise InvalidInput(
                f"sequences[{i}].ids[{j}]", f"token id {ids[j]} is not in the vocabulary (size {vocab_size})"
            )


def check_messages(messages: Sequence[Message], limits: Limits) -> None:
    """A non-empty chat of known roles, at most max_messages, contents within max_text_bytes together."""
    if not messages:
        raise InvalidInput("messages", "empty")
    if len(messages) > limits.max_messages:
        raise InvalidInput("messages", f"{len(messages)} messages, over the limit max_messages={limits.max_messages}")
    num_bytes = 0
    for i, m in enumerate(messages):
        if m.role not in CHAT_ROLES:
            raise InvalidInput(f"messages[{i}].role", f"{m.role!r} is not one of {', '.join(sorted(CHAT_ROLES))}")
        num_bytes += len(m.content.encode()) + len((m.reasoning_content or "").encode())
    if num_bytes > limits.max_text_bytes:
        raise InvalidInput(
            "messages", f"{num_bytes} bytes of content, over the limit max_text_bytes={limits.max_text_bytes}"
        )
