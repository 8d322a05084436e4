"""Worker events → deltas and choices: text, the reasoning split, stop strings, logprobs, usage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tokenizers import Tokenizer

from services.router.domain import (
    Choice,
    Delta,
    FinishReason,
    SampleComplete,
    TokenChunk,
    TokenLogprob,
    Usage,
)
from services.text.incremental import IncrementalDetokenizer
from services.text.reasoning import CLOSE, ReasoningSplitter

FINISH_REASONS = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH, "abort": FinishReason.ABORT}


def finish_reason(value: str) -> FinishReason:
    """SGLang sends "stop", "length", "abort" (sometimes as a JSON object's `type`)."""
    for key, reason in FINISH_REASONS.items():
        if key in value.lower():
            return reason
    return FinishReason.STOP if not value else FinishReason.ERROR


def reasoning_token_count(tokenizer: Tokenizer, ids: Sequence[int]) -> int:
    """Tokens up to and including the one that completes `</think>` (all of them if the block never closes)."""
    if CLOSE not in tokenizer.decode(list(ids)):
        return len(ids)
    lo, hi = 1, len(ids)  # smallest k with CLOSE in decode(ids[:k])
    while lo < hi:
        mid = (lo + hi) // 2
        if CLOSE in tokenizer.decode(list(ids[:mid])):
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass(slots=True)
class Sample:
    """One sample's text state while its tokens stream in."""

    index: int
    tokenizer: Tokenizer
    detok: IncrementalDetokenizer
    splitter: ReasoningSplitter | None
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    reasoning_tokens: int = 0
    finish: FinishReason = FinishReason.UNSPECIFIED
    matched_stop: str | None = None
    cached_tokens: int = 0
    weight_version: str = ""
    resumed: int = 0  # tokens taken from a partial sample (`resume`); the worker's output follows them
    resumed_logprobs: int = 0  # and their logprobs (0 when the partial sample had none)

    @property
    def is_done(self) -> bool:
        return self.finish is not FinishReason.UNSPECIFIED

    @property
    def answer(self) -> str:
        return "".join(self.text)

    def _split(self, text: str, final: bool) -> tuple[str, str]:
        if self.splitter is None:
            return "", text
        reasoning, answer = self.splitter.feed(text)
        if final:
            r2, a2 = self.splitter.finish()
            reasoning, answer = reasoning + r2, answer + a2
        return reasoning, answer

    def add_tokens(self, chunk: TokenChunk) -> Delta:
        if self.is_done or self.detok.is_stopped:
            return Delta(self.index)
        self.token_ids.extend(chunk.token_ids)
        self.logprobs.extend(chunk.logprobs)
        pushed = self.detok.push(chunk.token_ids)
        reasoning, answer = self._split(pushed.text, final=False)
        if pushed.stop is not None:
            self.matched_stop = pushed.stop
        return self._record(reasoning, answer, chunk.token_ids, chunk.logprobs)

    def resume(self, token_ids: tuple[int, ...], logprobs: tuple[TokenLogprob, ...]) -> None:
        """Start from a partial sample's tokens (RolloutPrompt.resume); the worker continues after them."""
        self.add_tokens(TokenChunk(self.index, token_ids, logprobs))
        self.resumed, self.resumed_logprobs = len(token_ids), len(logprobs)

    def complete(self, done: SampleComplete) -> Delta:
        """The worker's final message for this sample: flush held text and set the finish reason."""
        missing = done.output_ids[len(self.token_ids) - self.resumed :] if not self.detok.is_stopped else ()
        lps = done.logprobs[len(self.logprobs) - self.resumed_logprobs :] if done.logprobs is not None else ()
        if missing:
            self.token_ids.extend(missing)
            self.logprobs.extend(lps)
        text = self.detok.push(list(missing)).text if missing else ""
        text += self.detok.finish().text
        reasoning, answer = self._split(text, final=True)
        if self.splitter is not None and (self.reasoning or reasoning):
            self.reasoning_tokens = reasoning_token_count(self.tokenizer, self.token_ids)
        self.cached_tokens = done.cached_tokens
        self.weight_version = done.weight_version
        if self.detok.stop is not None or done.matched_stop_str is not None:
            self.finish = FinishReason.STOP
            self.matched_stop = self.detok.stop or done.matched_stop_str
        else:
            self.finish = finish_reason(done.finish_reason)
        return self._record(reasoning, answer, missing, lps, final=True)

    def _record(
        self, reasoning: str, answer: str, ids: Sequence[int], lps: Sequence[TokenLogprob], final: bool = False
    ) -> Delta:
        if reasoning:
            self.reasoning.append(reasoning)
        if answer:
            self.text.append(answer)
        return Delta(
            self.index,
            answer,
            reasoning,
            tuple(ids),
            tuple(lps),
            self.finish if final else FinishReason.UNSPECIFIED,
            self.matched_stop if final else None,
        )

    def choice(self) -> Choice:
        return Choice(
            self.index,
            self.answer,
            "".join(self.reasoning),
            tuple(self.token_ids),
            self.finish,
            self.matched_stop,
            tuple(self.logprobs),
        )


def new_samples(
    tokenizer: Tokenizer, n: int, stop: Sequence[str], include_stop: bool, split_reasoning: bool
) -> list[Sample]:
    return [
        Sample(
            i,
            tokenizer,
            IncrementalDetokenizer(tokenizer, stop=stop, include_stop=include_stop),
            ReasoningSplitter() if split_reasoning else None,
        )
        for i in range(n)
    ]


def usage(samples: Sequence[Sample], num_prompt_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=num_prompt_tokens,
        completion_tokens=sum(len(s.token_ids) for s in samples),
        reasoning_tokens=sum(s.reasoning_tokens for s in samples),
        cached_tokens=max((s.cached_tokens for s in samples), default=0),
    )
