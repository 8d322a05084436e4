"""One simulated sample: deterministic token ids, natural output length, finish rules."""

from __future__ import annotations

import asyncio
import math
import random
import zlib
from dataclasses import dataclass, field

from services.worker.engine_api import FinishReason, GenerateInput, OutputChunk, resolve_max_new_tokens
from services.worker.engines.sim.profile import OutputLength

_MASK64 = (1 << 64) - 1


def mix64(x: int) -> int:
    """splitmix64's finaliser: a cheap, well-spread hash of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """The ids the simulator may emit as text (special tokens excluded) and the EOS it ends on."""

    text_ids: tuple[int, ...]
    eos_token_ids: tuple[int, ...]

    def token(self, key: int, position: int) -> int:
        return self.text_ids[mix64(key ^ (position * 0x9E3779B97F4A7C15 & _MASK64)) % len(self.text_ids)]


def sample_keys(req: GenerateInput, index: int) -> tuple[int, int]:
    """(token key, length key) of one sample: greedy and seeded requests repeat exactly; others vary by id."""
    prompt_key = hash(req.input_ids) & _MASK64
    s = req.sampling
    if s.is_greedy:
        return prompt_key, prompt_key
    salt = s.seed if s.seed is not None else zlib.crc32(req.request_id.encode())
    key = mix64(prompt_key ^ mix64((salt & _MASK64) * 31 + index))
    return key, key


def natural_length(spec: OutputLength, key: int, max_new: int) -> int:
    """The sample's length before EOS: max_new_tokens ("request") or a seeded lognormal draw."""
    if spec.kind == "request":
        return max_new
    z = random.Random(key).gauss(0.0, 1.0)
    return max(1, min(max_new, round(spec.median_tokens * math.exp(spec.sigma * z))))


@dataclass(slots=True, eq=False)
class SimSeq:
    """A sample in the simulator's scheduler; its chunks go to `sink`, shared by the request's samples."""

    request_id: str
    index: int
    prompt: tuple[int, ...]
    max_new: int
    natural_len: int
    min_new: int
    stop_token_ids: frozenset[int]
    is_ignore_eos: bool
    token_key: int
    accept_key: int
    sink: asyncio.Queue[OutputChunk]
    out: list[int] = field(default_factory=list)
    cached_tokens: int = 0
    held_pages: list[int] = field(default_factory=list)
    private_tokens: int = 0  # KV tokens not in shared pages: the prompt's partial page + output
    reserved_tokens: int = 0  # output tokens still reserved at admission
    uncached_estimate: int = 0  # waiting-queue work estimate
    steps: int = 0
    draft_tokens: int = 0
    accepted_tokens: int = 0
    is_aborted: bool = False

    def context(self) -> tuple[int, ...]:
        return self.prompt + tuple(self.out)

    def next_token(self, vocab: Vocabulary) -> tuple[int, FinishReason | None, int | None]:
        """Append the next token; returns (token, finish reason or None, matched stop token or None)."""
        n = len(self.out) + 1
        can_stop = n >= self.min_new
        if can_stop and not self.is_ignore_eos and n == self.natural_len < self.max_new and vocab.eos_token_ids:
            token = vocab.eos_token_ids[0]
            self.out.append(token)
            return token, "stop", token
        token = vocab.token(self.token_key, n)
        self.out.append(token)
        if can_stop and token in self.stop_token_ids:
            return token, "stop", token
        if n >= self.max_new:
            return token, "length", None
        return token, None, None

    def is_draft_accepted(self, accept_rate: float) -> bool:
        return mix64(self.accept_key ^ self.steps) / _MASK64 < accept_rate

    def chunk(self, new: list[int], reason: FinishReason | None = None, matched: int | None = None) -> OutputChunk:
        return OutputChunk(
            index=self.index,
            token_ids=tuple(new),
            prompt_tokens=len(self.prompt),
            completion_tokens=len(self.out),
            cached_tokens=self.cached_tokens,
            finished=reason is not None,
            finish_reason=reason,
            matched_token_id=matched,
            output_ids=tuple(self.out) if reason is not None else (),
            spec_accepted_tokens=self.accepted_tokens if reason is not None else 0,
            spec_draft_tokens=self.draft_tokens if reason is not None else 0,
        )


def make_samples(
    req: GenerateInput, max_context: int, spec: OutputLength, sink: asyncio.Queue[OutputChunk]
) -> list[SimSeq]:
    """The request's n samples, ready to queue."""
    max_new = resolve_max_new_tokens(req.sampling, len(req.input_ids), max_context)
    seqs = []
    for index in range(req.sampling.n):
        token_key, length_key = sample_keys(req, index)
        seqs.append(
            SimSeq(
                request_id=req.request_id,
                index=index,
                prompt=req.input_ids,
                max_new=max_new,
                natural_len=natural_length(spec, length_key, max_new),
                min_new=req.sampling.min_new_tokens,
                stop_token_ids=frozenset(req.sampling.stop_token_ids),
                is_ignore_eos=req.sampling.ignore_eos,
                token_key=token_key,
                accept_key=mix64(token_key + 7),
                sink=sink,
            )
        )
    return seqs
