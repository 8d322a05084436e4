"""Per-request bookkeeping in the servicer: latency metrics and cumulative logprobs per sample index."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from services.worker import metrics
from services.worker.engine_api import OutputChunk


@dataclass(slots=True)
class StreamStats:
    """Observes one Generate call's chunks: TTFT, inter-token latency, token and MTP counters."""

    started_s: float
    keep_logprobs: bool = False
    _last_token_s: dict[int, float] = field(default_factory=dict)
    _has_first: bool = False
    _counted_prompt: bool = False
    _logprobs: dict[int, list[OutputChunk]] = field(default_factory=dict)

    def observe(self, chunk: OutputChunk) -> None:
        now = time.perf_counter()
        if not self._counted_prompt:
            self._counted_prompt = True
            metrics.PROMPT.inc(chunk.prompt_tokens)
            metrics.CACHED.inc(chunk.cached_tokens)
        if chunk.token_ids:
            metrics.GENERATED.inc(len(chunk.token_ids))
            if not self._has_first:
                self._has_first = True
                metrics.TTFT.observe(now - self.started_s)
            last = self._last_token_s.get(chunk.index)
            if last is not None:
                metrics.ITL.observe(now - last)
            self._last_token_s[chunk.index] = now
        if self.keep_logprobs and chunk.logprobs:
            self._logprobs.setdefault(chunk.index, []).append(chunk)
        if chunk.finished:
            metrics.FINISHED.labels(chunk.finish_reason or "stop").inc()
            if chunk.spec_draft_tokens:
                metrics.SPEC_DRAFT.inc(chunk.spec_draft_tokens)
                metrics.SPEC_ACCEPTED.inc(chunk.spec_accepted_tokens)

    def all_logprobs(self, index: int) -> OutputChunk | None:
        """The sample's logprobs so far, merged into one chunk (for the `complete` message)."""
        parts = self._logprobs.get(index)
        if not parts:
            return None
        return OutputChunk(
            index=index,
            token_ids=tuple(t for p in parts for t in p.token_ids),
            prompt_tokens=parts[-1].prompt_tokens,
            completion_tokens=parts[-1].completion_tokens,
            logprobs=tuple(lp for p in parts for lp in p.logprobs),
            top_logprobs=tuple(top for p in parts for top in p.top_logprobs),
        )
