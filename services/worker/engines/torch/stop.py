"""When a sample ends: EOS, stop token ids, stop strings (decoded with the tokenizer), max_new_tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.worker.engine_api import FinishReason, SamplingConfig

if TYPE_CHECKING:
    from tokenizers import Tokenizer


@dataclass(frozen=True, slots=True)
class StopMatch:
    reason: FinishReason
    token_id: int | None = None
    stop_str: str | None = None


@dataclass(frozen=True, slots=True)
class StopChecker:
    """Checks one sample's output after each appended token. Stop tokens count as output (SGLang does too)."""

    stop_token_ids: frozenset[int]  # EOS (unless ignore_eos) and the request's stop_token_ids
    stop_strs: tuple[str, ...]
    min_new_tokens: int
    max_new_tokens: int
    tokenizer: Tokenizer | None = None

    @classmethod
    def build(
        cls, s: SamplingConfig, eos_token_ids: tuple[int, ...], max_new_tokens: int, tokenizer: Tokenizer | None
    ) -> StopChecker:
        ids = set(s.stop_token_ids) | (set() if s.ignore_eos else set(eos_token_ids))
        return cls(frozenset(ids), tuple(x for x in s.stop if x), s.min_new_tokens, max_new_tokens, tokenizer)

    @property
    def suppressed_ids(self) -> frozenset[int]:
        """Tokens the sampler masks out until min_new_tokens are out (they would end the sample early)."""
        return self.stop_token_ids

    def check(self, token_ids: list[int], num_out: int) -> StopMatch | None:
        """The reason to stop after token_ids[-1], the num_out-th output token, was appended, or None to go on
        (the sample's whole token list, not a copy of its output: a check per token must not cost O(length))."""
        if num_out >= self.min_new_tokens:
            if token_ids[-1] in self.stop_token_ids:
                return StopMatch("stop", token_id=token_ids[-1])
            matched = self._stop_str(token_ids, num_out)
            if matched is not None:
                return StopMatch("stop", stop_str=matched)
        if num_out >= self.max_new_tokens:
            return StopMatch("length")
        return None

    def _stop_str(self, token_ids: list[int], num_out: int) -> str | None:
        """A stop string ending in the text the newest token added (decodes a short window of output tokens)."""
        if not self.stop_strs or self.tokenizer is None:
            return None
        longest = max(len(s) for s in self.stop_strs)
        window = token_ids[-min(num_out, 4 * longest + 4) :]  # a token decodes to >= 1 byte, a char is <= 4
        text = self.tokenizer.decode(window, skip_special_tokens=False)
        before = self.tokenizer.decode(window[:-1], skip_special_tokens=False) if len(window) > 1 else ""
        new_from = min(len(before), len(text))  # text[new_from:] came with the newest token
        return next((s for s in self.stop_strs if s in text[max(0, new_from - len(s) + 1) :]), None)
