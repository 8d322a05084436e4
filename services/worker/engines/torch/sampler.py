"""Batched sampling: penalties, temperature, top-k/top-p/min-p, per-request seeds, logprobs.

A "row" is one position whose next token is chosen (a sequence in plain decoding; two per sequence
when MTP verifies a draft). Greedy rows take the argmax of the penalised logits; as distributions
they are one-hot, which makes speculative acceptance exact for them too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from services.worker.engines.torch import grammar
from services.worker.engines.torch.sequence import Sequence

Generators = tuple[torch.Generator | None, ...]


@dataclass(frozen=True, slots=True)
class SamplingRows:
    """Per-row settings as tensors on the model's device. R rows, V vocabulary entries."""

    temperature: Tensor  # [R] (1 for greedy rows)
    is_greedy: Tensor  # [R] bool
    top_k: Tensor  # [R] int64, V when off
    top_p: Tensor  # [R]
    min_p: Tensor  # [R]
    generators: Generators  # per row: the request's seeded generator
    is_all_greedy: bool
    has_filters: bool  # any top_k/top_p/min_p in use
    penalties: Tensor | None = None  # [R, 3]: repetition, frequency, presence (None if all neutral)
    token_counts: Tensor | None = None  # [R, V] output token counts (frequency/presence penalties)
    is_seen: Tensor | None = None  # [R, V] bool: in prompt or output (repetition penalty)
    suppress: Tensor | None = None  # [R, V] bool: stop tokens before min_new_tokens

    @property
    def num_rows(self) -> int:
        return self.temperature.shape[0]


def build_rows(
    seqs: list[Sequence], rows_per_seq: int, drafts: list[int] | None, vocab_size: int, device: torch.device
) -> SamplingRows:
    """Rows for `rows_per_seq` consecutive positions of each sequence; row j's context adds the draft if j > 0."""
    per_row = [s for s in seqs for _ in range(rows_per_seq)]
    params = [s.sampling for s in per_row]
    is_greedy = [p.is_greedy for p in params]
    top_k = [vocab_size if p.top_k < 0 else p.top_k for p in params]
    # One host-to-device copy for all settings: [5, R] float32 (top_k < 2**24 is exact in float32).
    packed = torch.tensor(
        [
            [1.0 if g else p.temperature for p, g in zip(params, is_greedy, strict=True)],
            [float(g) for g in is_greedy],
            [float(k) for k in top_k],
            [p.top_p for p in params],
            [p.min_p for p in params],
        ]
    ).to(device, non_blocking=True)
    rows: dict[str, object] = dict(
        temperature=packed[0],
        is_greedy=packed[1] > 0,
        top_k=packed[2].long(),
        top_p=packed[3],
        min_p=packed[4],
        generators=tuple(s.generator for s in per_row),
        is_all_greedy=all(is_greedy),
        has_filters=any(k < vocab_size or p.top_p < 1 or p.min_p > 0 for k, p in zip(top_k, params, strict=True)),
    )
    extra = [[] if j == 0 or drafts is None else [drafts[i]] for i in range(len(seqs)) for j in range(rows_per_seq)]
    if any(p.repetition_penalty != 1 or p.frequency_penalty or p.presence_penalty for p in params):
        outputs = [s.output_ids + e for s, e in zip(per_row, extra, strict=True)]
        seen = [s.token_ids + e for s, e in zip(per_row, extra, strict=True)]
        penalties = [[p.repetition_penalty, p.frequency_penalty, p.presence_penalty] for p in params]
        rows["penalties"] = torch.tensor(penalties).to(device, non_blocking=True)
        rows["token_counts"] = _counts(outputs, vocab_size, device)
        rows["is_seen"] = _counts(seen, vocab_size, device) > 0
    lengths = [s.num_output_tokens + len(e) for s, e in zip(per_row, extra, strict=True)]
    if any(n < s.stop.min_new_tokens for s, n in zip(per_row, lengths, strict=True)):
        banned = [
            sorted(s.stop.suppressed_ids) if n < s.stop.min_new_tokens else []
            for s, n in zip(per_row, lengths, strict=True)
        ]
        rows["suppress"] = _counts(banned, vocab_size, device) > 0
    if any(s.grammar is not None for s in per_row):  # structured output: what each row's grammar forbids
        drafts_of = [e[0] if e else None for e in extra]
        forbidden = grammar.banned([s.grammar for s in per_row], drafts_of, device)
        suppress = rows.get("suppress")
        rows["suppress"] = forbidden if suppress is None else forbidden | suppress  # type: ignore[operator]
    return SamplingRows(**rows)  # type: ignore[arg-type]


def _counts(token_lists: list[list[int]], vocab_size: int, device: torch.device) -> Tensor:
    width = max(1, max(len(t) for t in token_lists))
    ids = torch.tensor([t + [0] * (width - len(t)) for t in token_lists], dtype=torch.int64, device=device)
    ones = torch.tensor([[1.0] * len(t) + [0.0] * (width - len(t)) for t in token_lists], device=device)
    return torch.zeros(len(token_lists), vocab_size, device=device).scatter_add_(1, ids, ones)


def penalise(logits: Tensor, rows: SamplingRows) -> Tensor:
    """logits: [R, V] float32 -> [R, V] after penalties and min_new_tokens suppression (greedy rows too)."""
    if rows.penalties is not None:
        assert rows.token_counts is not None and rows.is_seen is not None
        rep, freq, presence = rows.penalties.unbind(-1)
        scaled = torch.where(logits > 0, logits / rep[:, None], logits * rep[:, None])
        logits = torch.where(rows.is_seen, scaled, logits)
        logits = logits - freq[:, None] * rows.token_counts - presence[:, None] * (rows.token_counts > 0)
    if rows.suppress is not None:
        logits = logits.masked_fill(rows.suppress, float("-inf"))
    return logits


def to_probs(logits: Tensor, rows: SamplingRows) -> Tensor:
    """Penalised logits [R, V] -> the distribution each row samples from (one-hot for greedy rows)."""
    probs = torch.softmax(logits / rows.temperature[:, None], dim=-1)
    if rows.has_filters:
        probs = _filter(probs, rows)
    one_hot = torch.zeros_like(probs).scatter_(1, logits.argmax(-1, keepdim=True), 1.0)
    return torch.where(rows.is_greedy[:, None], one_hot, probs)


def _filter(probs: Tensor, rows: SamplingRows) -> Tensor:
    sorted_p, order = probs.sort(dim=-1, descending=True)
    cum_before = sorted_p.cumsum(-1) - sorted_p
    rank = torch.arange(probs.shape[-1], device=probs.device)
    drop = (rank[None] >= rows.top_k[:, None]) | (cum_before > rows.top_p[:, None])
    drop |= sorted_p < rows.min_p[:, None] * sorted_p[:, :1]
    kept = torch.zeros_like(probs).scatter_(1, order, sorted_p.masked_fill(drop, 0.0))
    return kept / kept.sum(-1, keepdim=True)


def exponential_noise(shape: tuple[int, int], generators: Generators, device: torch.device) -> Tensor:
    """Exp(1) noise [R, V]; seeded rows draw from their own generator, the rest from the global one."""
    noise = torch.empty(shape, device=device).exponential_()
    for r, gen in enumerate(generators):
        if gen is not None:
            noise[r].exponential_(generator=gen)
    return noise


def uniform(generators: Generators, device: torch.device) -> Tensor:
    """U(0, 1) [R], seeded rows from their own generator."""
    u = torch.rand(len(generators), device=device)
    for r, gen in enumerate(generators):
        if gen is not None:
            u[r] = torch.rand((), device=device, generator=gen)
    return u


def sample_from(probs: Tensor, generators: Generators) -> Tensor:
    """One token per row of probs [R, V] -> [R] int64, without a host sync (argmax of p / Exp(1))."""
    noise = exponential_noise((probs.shape[0], probs.shape[1]), generators, probs.device)
    return (probs / noise).argmax(-1)


def plain_rows(rows: SamplingRows, stride: int = 1) -> SamplingRows:
    """Every `stride`-th row, without penalties or suppression (the settings MTP drafts with)."""
    pick = slice(None, None, stride)
    return SamplingRows(
        temperature=rows.temperature[pick],
        is_greedy=rows.is_greedy[pick],
        top_k=rows.top_k[pick],
        top_p=rows.top_p[pick],
        min_p=rows.min_p[pick],
        generators=rows.generators[pick],
        is_all_greedy=rows.is_all_greedy,
        has_filters=rows.has_filters,
    )


def sample(logits: Tensor, rows: SamplingRows) -> Tensor:
    """Next tokens [R] for the raw logits [R, V]."""
    logits = penalise(logits.float(), rows)
    if rows.is_all_greedy:
        return logits.argmax(-1)
    return sample_from(to_probs(logits, rows), rows.generators)


def logprobs_of(logits: Tensor, rows: SamplingRows, tokens: Tensor, num_top: int) -> tuple[Tensor, Tensor, Tensor]:
    """Logprobs of the chosen tokens [R] and the top `num_top` [R, K] (ids, values), under the penalised,
    temperature-scaled distribution before top-k/top-p filtering (what SGLang returns by default)."""
    logp = torch.log_softmax(penalise(logits.float(), rows) / rows.temperature[:, None], dim=-1)
    chosen = logp.gather(1, tokens[:, None]).squeeze(1)
    top_values, top_ids = logp.topk(num_top, dim=-1) if num_top else (logp[:, :0], tokens[:, None][:, :0])
    return chosen, top_ids, top_values
