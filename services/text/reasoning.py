"""Split MiMo's streamed text into reasoning (inside <think>…</think>) and the answer.

The deltas concatenate to the same split the whole text gets: one newline after each tag and the newline
before `</think>` are dropped. Text that does not start with `<think>` is all answer.
"""

from __future__ import annotations

from dataclasses import dataclass

OPEN, CLOSE = "<think>", "</think>"


def _partial_suffix(text: str, pattern: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `pattern`."""
    for n in range(min(len(text), len(pattern) - 1), 0, -1):
        if pattern.startswith(text[-n:]):
            return n
    return 0


@dataclass(slots=True)
class ReasoningSplitter:
    state: str = "start"  # start -> reasoning -> answer
    _buffer: str = ""
    _drop_newline: bool = False

    @property
    def in_reasoning(self) -> bool:
        return self.state != "answer"

    def feed(self, text: str) -> tuple[str, str]:
        """Add streamed text; returns the (reasoning, answer) text that is now certain."""
        self._buffer += text
        reasoning = answer = ""
        if self.state == "start":
            head = self._buffer.lstrip()
            if OPEN.startswith(head):  # could still become "<think>"
                return "", ""
            if head.startswith(OPEN):
                self.state, self._buffer = "reasoning", head[len(OPEN) :]
                self._drop_newline = True
            else:
                self.state = "answer"
        if self.state == "reasoning":
            self._buffer = self._strip_newline(self._buffer)
            if not self._buffer and self._drop_newline:
                return "", ""
            end = self._buffer.find(CLOSE)
            if end < 0:
                hold = max(_partial_suffix(self._buffer, "\n" + CLOSE), _partial_suffix(self._buffer, CLOSE))
                reasoning, self._buffer = (
                    self._buffer[: len(self._buffer) - hold],
                    self._buffer[len(self._buffer) - hold :],
                )
                return reasoning, ""
            reasoning = self._buffer[:end].removesuffix("\n")
            self.state, self._buffer, self._drop_newline = "answer", self._buffer[end + len(CLOSE) :], True
        self._buffer = self._strip_newline(self._buffer)
        answer, self._buffer = self._buffer, ""
        return reasoning, answer

    def finish(self) -> tuple[str, str]:
        """End of text: whatever is held back is flushed (an unclosed think block stays reasoning)."""
        rest, self._buffer = self._buffer, ""
        if self.state == "reasoning":
            return rest, ""
        return "", rest

    def _strip_newline(self, text: str) -> str:
        if self._drop_newline and text:
            self._drop_newline = False
            return text.removeprefix("\n")
        return text
