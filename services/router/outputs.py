"""Worker token streams → public deltas and choices: text, the reasoning split, stop strings, logprobs, usage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mimo_client.v1 import common_pb2, inference_pb2
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from tokenizers import Tokenizer

from services.text.incremental import IncrementalDetokenizer
from services.text.reasoning import CLOSE, ReasoningSplitter

FINISH_REASONS = {
    "stop": common_pb2.FINISH_REASON_STOP,
    "length": common_pb2.FINISH_REASON_LENGTH,
    "abort": common_pb2.FINISH_REASON_ABORT,
}


def finish_reason(value: str) -> common_pb2.FinishReason:
    """SGLang sends "stop", "length", "abort" (sometimes as a JSON object's `type`)."""
    for key, reason in FINISH_REASONS.items():
        if key in value.lower():
            return reason
    return common_pb2.FINISH_REASON_STOP if not value else common_pb2.FINISH_REASON_ERROR


def logprobs_of(out: pb.OutputLogProbs) -> list[common_pb2.TokenLogprob]:
    result = []
    for i, (token_id, logprob) in enumerate(zip(out.token_ids, out.token_logprobs, strict=False)):
        top = out.top_logprobs[i] if i < len(out.top_logprobs) else None
        alternatives = (
            [common_pb2.TopLogprob(token_id=t, logprob=v) for t, v in zip(top.token_ids, top.values, strict=False)]
            if top
            else []
        )
        result.append(common_pb2.TokenLogprob(token_id=token_id, logprob=logprob, top=alternatives))
    return result


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
    logprobs: list[common_pb2.TokenLogprob] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    reasoning_tokens: int = 0
    finish: common_pb2.FinishReason = common_pb2.FINISH_REASON_UNSPECIFIED
    matched_stop: str | None = None
    cached_tokens: int = 0

    @property
    def is_done(self) -> bool:
        return self.finish != common_pb2.FINISH_REASON_UNSPECIFIED

    def _split(self, text: str, final: bool) -> tuple[str, str]:
        if self.splitter is None:
            return "", text
        reasoning, answer = self.splitter.feed(text)
        if final:
            r2, a2 = self.splitter.finish()
            reasoning, answer = reasoning + r2, answer + a2
        return reasoning, answer

    def add_tokens(self, ids: Sequence[int], logprobs: Sequence[common_pb2.TokenLogprob]) -> inference_pb2.StreamDelta:
        if self.is_done or self.detok.is_stopped:
            return inference_pb2.StreamDelta(index=self.index)
        self.token_ids.extend(ids)
        self.logprobs.extend(logprobs)
        delta = self.detok.push(ids)
        reasoning, answer = self._split(delta.text, final=False)
        if delta.stop is not None:
            self.matched_stop = delta.stop
        return self._record(reasoning, answer, ids, logprobs)

    def complete(self, done: pb.GenerateComplete) -> inference_pb2.StreamDelta:
        """The worker's final message for this sample: flush held text and set the finish reason."""
        missing = list(done.output_ids[len(self.token_ids) :]) if not self.detok.is_stopped else []
        lps = logprobs_of(done.output_logprobs)[len(self.logprobs) :] if done.HasField("output_logprobs") else []
        if missing:
            self.token_ids.extend(missing)
            self.logprobs.extend(lps)
        text = self.detok.push(missing).text if missing else ""
        text += self.detok.finish().text
        reasoning, answer = self._split(text, final=True)
        if self.splitter is not None and (self.reasoning or reasoning):
            self.reasoning_tokens = reasoning_token_count(self.tokenizer, self.token_ids)
        self.cached_tokens = done.cached_tokens
        if self.detok.stop is not None or done.WhichOneof("matched_stop") == "matched_stop_str":
            self.finish = common_pb2.FINISH_REASON_STOP
            self.matched_stop = self.detok.stop or done.matched_stop_str
        else:
            self.finish = finish_reason(done.finish_reason)
        delta = self._record(reasoning, answer, missing, lps)
        delta.finish_reason = self.finish
        if self.matched_stop is not None:
            delta.matched_stop = self.matched_stop
        return delta

    def _record(self, reasoning: str, answer: str, ids: Sequence[int], lps: Sequence[common_pb2.TokenLogprob]):
        if reasoning:
            self.reasoning.append(reasoning)
        if answer:
            self.text.append(answer)
        return inference_pb2.StreamDelta(
            index=self.index, text=answer, reasoning=reasoning, token_ids=ids, logprobs=lps
        )

    def choice(self) -> inference_pb2.Choice:
        choice = inference_pb2.Choice(
            index=self.index,
            text="".join(self.text),
            reasoning="".join(self.reasoning),
            token_ids=self.token_ids,
            finish_reason=self.finish,
            logprobs=self.logprobs,
        )
        if self.matched_stop is not None:
            choice.matched_stop = self.matched_stop
        return choice


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


def usage(samples: Sequence[Sample], num_prompt_tokens: int) -> common_pb2.Usage:
    completion = sum(len(s.token_ids) for s in samples)
    return common_pb2.Usage(
        prompt_tokens=num_prompt_tokens,
        completion_tokens=completion,
        reasoning_tokens=sum(s.reasoning_tokens for s in samples),
        cached_tokens=max((s.cached_tokens for s in samples), default=0),
        total_tokens=num_prompt_tokens + completion,
    )
