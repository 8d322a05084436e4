"""Incremental detokenization of a token stream, with stop strings: plain classes over a `tokenizers.Tokenizer`.

Byte-level BPE can split one character (a Chinese character, an emoji) across tokens, so a token on its own may
decode to U+FFFD. The decoder keeps a window of tokens whose text is not final, and emits text only once it no
longer ends in U+FFFD; what it emits, followed by what `finish` returns, equals decoding the whole sequence.
Stop strings are matched on that text: the output never contains a stop string (unless asked to), and text that
could be the start of one is held back until the next tokens settle it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

REPLACEMENT_CHAR = "\ufffd"


@dataclass(frozen=True, slots=True)
class Delta:
    """New text to show, and the stop string that ended the stream (set once, on the delta that hit it)."""

    text: str
    stop: str | None = None


class TokenTextDecoder:
    """Token ids in, final text out; holds back text that ends in an incomplete UTF-8 character."""

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special_tokens
        # Invariant: the text of ids[:_read_offset] (relative to the window) has been emitted; the window starts at
        # an emitted boundary, so it decodes without a partial character at its start, and gives later tokens
        # their left context (decoders such as Metaspace treat the first token of a decode specially).
        self._window: list[int] = []
        self._read_offset = 0
        self._emitted_window_text = ""  # decode(window[:_read_offset])

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special)

    def push(self, ids: Iterable[int]) -> str:
        """Add tokens; return the newly final text ("" while a character is still incomplete)."""
        self._window.extend(ids)
        text = self._decode(self._window)
        if len(text) <= len(self._emitted_window_text) or text.endswith(REPLACEMENT_CHAR):
            return ""
        new_text = text[len(self._emitted_window_text) :]
        # slide: the tokens just emitted become the left context of the next window
        self._window = self._window[self._read_offset :]
        self._read_offset = len(self._window)
        self._emitted_window_text = self._decode(self._window)
        return new_text

    def pending(self) -> str:
        """The text held back so far: what `finish` would return now (may contain U+FFFD)."""
        return self._decode(self._window)[len(self._emitted_window_text) :]

    def finish(self) -> str:
        """The held-back text, as whole-sequence decoding renders it; the decoder is empty afterwards."""
        rest = self.pending()
        self._window, self._read_offset, self._emitted_window_text = [], 0, ""
        return rest


class StopStringMatcher:
    """Finds the earliest stop string in streamed text; never emits text that could still become one."""

    def __init__(self, stops: Sequence[str], include_stop: bool = False) -> None:
        self._stops = tuple(dict.fromkeys(s for s in stops if s))  # unique, non-empty, in the caller's order
        self._include_stop = include_stop
        self._max_held = max((len(s) for s in self._stops), default=1) - 1
        self._held = ""
        self.matched: str | None = None

    def feed(self, text: str) -> Delta:
        """Add text; return what is safe to show, with the stop string if one just matched."""
        if self.matched is not None or not text:
            return Delta("")
        if not self._stops:
            return Delta(text)
        buf = self._held + text
        hit = self._earliest(buf)
        if hit is not None:
            pos, stop = hit
            self.matched, self._held = stop, ""
            return Delta(buf[: pos + len(stop)] if self._include_stop else buf[:pos], stop)
        keep = self._held_suffix_len(buf)
        self._held = buf[len(buf) - keep :]
        return Delta(buf[: len(buf) - keep])

    def finish(self) -> Delta:
        """The end of the stream: text held as a possible stop-string start is released."""
        out, self._held = self._held, ""
        return Delta(out if self.matched is None else "")

    def _earliest(self, buf: str) -> tuple[int, str] | None:
        best: tuple[int, str] | None = None
        for stop in self._stops:
            pos = buf.find(stop)
            if pos >= 0 and (best is None or pos < best[0]):
                best = (pos, stop)
        return best

    def _held_suffix_len(self, buf: str) -> int:
        """Length of the longest suffix of `buf` that is a proper prefix of some stop string."""
        for n in range(min(len(buf), self._max_held), 0, -1):
            suffix = buf[-n:]
            if any(stop.startswith(suffix) for stop in self._stops):
                return n
        return 0


class IncrementalDetokenizer:
    """A generated token stream to text deltas: UTF-8-safe, stop strings trimmed and reported.

    `push` per token (or a few), `finish` at the end of the stream; after a stop string matched, further tokens
    are ignored (`is_stopped`). `text` is everything emitted so far.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        skip_special_tokens: bool = True,
        stop: Sequence[str] = (),
        include_stop: bool = False,
    ) -> None:
        self._decoder = TokenTextDecoder(tokenizer, skip_special_tokens)
        self._stops = StopStringMatcher(stop, include_stop)
        self._parts: list[str] = []

    @property
    def is_stopped(self) -> bool:
        return self._stops.matched is not None

    @property
    def stop(self) -> str | None:
        """The stop string that matched, if any."""
        return self._stops.matched

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def push(self, token_ids: int | Iterable[int]) -> Delta:
        """Add one token id (or several); return the new text."""
        if self.is_stopped:
            return Delta("")
        ids = [token_ids] if isinstance(token_ids, int) else token_ids
        return self._record(self._stops.feed(self._decoder.push(ids)))

    def finish(self) -> Delta:
        """Release everything held back (an incomplete character decodes as U+FFFD, as whole decoding does)."""
        if self.is_stopped:
            return Delta("")
        delta = self._stops.feed(self._decoder.finish())
        if delta.stop is None:
            delta = Delta(delta.text + self._stops.finish().text)
        return self._record(delta)

    def _record(self, delta: Delta) -> Delta:
        if delta.text:
            self._parts.append(delta.text)
        return delta


def detokenize_stream(
    tokenizer: Tokenizer,
    token_ids: Iterable[int],
    *,
    skip_special_tokens: bool = True,
    stop: Sequence[str] = (),
    include_stop: bool = False,
) -> tuple[str, str | None]:
    """Run a whole stream through an IncrementalDetokenizer, token by token: (text, matched stop string or None)."""
    detok = IncrementalDetokenizer(
        tokenizer, skip_special_tokens=skip_special_tokens, stop=stop, include_stop=include_stop
    )
    for token_id in token_ids:
        if detok.push(token_id).stop is not None:
            break
    detok.finish()
    return detok.text, detok.stop
