"""MTP speculative decoding, gpt-fast style: the MTP layer drafts one token, the model verifies [x_t, draft].

Position pairing: the MTP layer at position t reads the backbone's hidden h_t and the token x_{t+1}
and predicts x_{t+2}; its KV (one extra cache layer) sits in the same slots as the backbone's.
Each step after verification reruns it over the verified positions (SGLang's draft-extend), which
both refreshes its KV and yields the next draft. Greedy acceptance is exact; sampled acceptance is
speculative rejection sampling, so the output distribution is the target's.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from services.worker.engines.torch import sampler
from services.worker.engines.torch.attention import StepTensors
from services.worker.engines.torch.cuda_graphs import batch_bucket, batch_buckets
from services.worker.engines.torch.layers import Kernels
from services.worker.engines.torch.model_runner import (
    InFlight,
    ModelRunner,
    SeqResult,
    after_spec,
    last_rows,
    partial_chunks,
    token_logprobs,
)
from services.worker.engines.torch.sequence import Sequence


def draft(runner: ModelRunner, mtp_hidden: Tensor, rows: sampler.SamplingRows) -> tuple[Tensor, Tensor | None]:
    """One draft token per row from MTP hidden states [B, H]; also q [B, V] unless every row is greedy."""
    logits = runner.logits(mtp_hidden).float()
    if rows.is_all_greedy:
        return logits.argmax(-1), None
    q = sampler.to_probs(logits, rows)
    return sampler.sample_from(q, rows.generators), q


def verify(logits: Tensor, drafts: Tensor, q: Tensor | None, rows: sampler.SamplingRows) -> tuple[Tensor, Tensor]:
    """Target logits [B, 2, V] at (x_t, draft) -> tokens [B, 2], accepted [B] bool.

    Accepted: the sample emits (draft, tokens[:, 1]) (the bonus token). Rejected: it emits
    tokens[:, 0] alone (greedy: the target's argmax; sampled: a draw from norm(max(0, p - q))).
    """
    num_seqs, _, vocab = logits.shape
    logits = sampler.penalise(logits.reshape(-1, vocab).float(), rows)
    if rows.is_all_greedy:
        target = logits.argmax(-1).view(num_seqs, 2)
        return target, target[:, 0] == drafts
    p = sampler.to_probs(logits, rows).view(num_seqs, 2, vocab)
    if q is None:  # all drafts greedy: one-hot
        q = F.one_hot(drafts, vocab).to(p.dtype)
    p_draft = p[:, 0].gather(1, drafts[:, None]).squeeze(1)
    q_draft = q.gather(1, drafts[:, None]).squeeze(1)  # > 0: the draft was drawn from q
    accepted = sampler.uniform(rows.generators[::2], p.device) * q_draft < p_draft  # u < p(d) / q(d)
    residual = (p[:, 0] - q).clamp(min=0.0)
    total = residual.sum(-1, keepdim=True)
    residual = torch.where(total > 0, residual / total.clamp(min=1e-30), p[:, 0])
    noise = sampler.exponential_noise((2 * num_seqs, vocab), rows.generators, p.device).view(num_seqs, 2, vocab)
    corrected = (residual / noise[:, 0]).argmax(-1)
    bonus = (p[:, 1] / noise[:, 1]).argmax(-1)
    return torch.stack([torch.where(accepted, drafts, corrected), bonus], dim=1), accepted


def stack_draft_probs(seqs: list[Sequence], drafts: Tensor, vocab: int) -> Tensor | None:
    """q [B, V] of the sequences' drafts (one-hot where a greedy draft kept none)."""
    if all(s.draft_probs is None for s in seqs):
        return None
    one_hot = F.one_hot(drafts, vocab).float()
    return torch.stack([one_hot[i] if s.draft_probs is None else s.draft_probs for i, s in enumerate(seqs)])


def run_prefill(runner: ModelRunner, seqs: list[Sequence], bucket: int | None = None) -> list[SeqResult]:
    """Prefill (prompt chunks, and decoding sequences' newest tokens in a mixed step), sample the next
    token, then run the MTP layer over the fed positions to fill its KV and draft.

    With `bucket` (the batch size the prompts join) a plain prefill where the policy has chosen plain steps
    there (seeded samples aside, as in `run_decode`): a later draft of such a sequence attends to stale MTP
    KV at its prompt's positions, as after plain decode steps (fewer drafts accepted, never a wrong token)."""
    if bucket is not None and not _is_seeded(seqs) and not runner.spec_policy.expects_draft(bucket):
        return runner.run_plain(seqs, is_prefill=True)
    new_tokens = [s.pending_tokens() for s in seqs]
    step = runner.prepare(seqs, new_tokens)
    hidden = runner.forward(step)  # [N, H]
    last = last_rows(new_tokens, runner.device)
    logits = runner.logits(hidden[last])
    rows = sampler.build_rows(seqs, 1, None, runner.vocab_size, runner.device)
    tokens = sampler.sample(logits, rows)  # [B]
    # x_{t+1} for every fed position t: the next fed token; after the chunk's last one, the next prompt
    # token (a partial chunk) or the new sample.
    shifted = [t for s, toks in zip(seqs, new_tokens, strict=True) for t in [*toks[1:], next_prompt_token(s, toks)]]
    next_ids = torch.tensor(shifted, dtype=torch.int64).to(runner.device, non_blocking=True)
    is_sampled = torch.tensor([not s.is_chunk_partial for s in seqs], device=runner.device)
    next_ids = F.pad(next_ids, (0, step.input_ids.shape[0] - len(shifted)))
    next_ids = next_ids.index_copy(0, last, torch.where(is_sampled, tokens, next_ids[last]))
    drafts, q = draft(runner, runner.mtp_forward(hidden, next_ids, step)[last], sampler.plain_rows(rows))
    extras = token_logprobs(seqs, logits, rows, tokens)
    ids = torch.cat([tokens, drafts]).tolist()
    n = len(seqs)
    results = [
        SeqResult([ids[i]], 0, *extras[i], draft_token=ids[n + i], draft_probs=None if q is None else q[i])
        for i in range(n)
    ]
    return partial_chunks(seqs, new_tokens, results)


def next_prompt_token(seq: Sequence, fed: list[int]) -> int:
    """The token after a chunk that stops inside the prompt (0, a placeholder, when the sample follows)."""
    end = seq.num_computed_tokens + len(fed)
    return seq.token_ids[end] if end < seq.num_tokens else 0


def _is_seeded(seqs: list[Sequence]) -> bool:
    """A seeded sampled request among them: its tokens must not depend on timing, and its random draws differ
    between the two kinds of step, so its steps always draft."""
    return any(s.generator is not None and not s.is_greedy for s in seqs)


def run_decode(runner: ModelRunner, seqs: list[Sequence]) -> tuple[list[SeqResult], bool, list[int]]:
    """An MTP step or a plain decode step, whichever the policy expects to emit more tokens per second.

    Returns the results, whether it drafted, and 0 or 1 for each real draft it verified (accepted or
    not); the caller records the whole step's wall time with them (`SpecPolicy.record`).
    Batches with a seeded sampled request always draft, so its seed fixes its tokens.
    A plain step leaves the MTP layer's KV unwritten at its position: later drafts attend to a stale
    entry there (lower acceptance, never a wrong token: verification is exact).
    """
    if not _is_seeded(seqs) and not runner.spec_policy.should_draft(batch_bucket(len(seqs))):
        return runner.run_plain(seqs, is_prefill=False), False, []
    results = run_spec(runner, seqs)
    return results, True, [r.num_accepted for r in results if r.drafted]


def run_spec(runner: ModelRunner, seqs: list[Sequence]) -> list[SeqResult]:
    """Verify each sequence's (newest token, draft), then draft-extend the MTP layer and draft again."""
    n = len(seqs)
    had_draft = [s.draft_token is not None for s in seqs]  # after a plain step: a placeholder, not a draft
    draft_list = [s.draft_token if s.draft_token is not None else s.last_token for s in seqs]
    step = runner.prepare(seqs, [[s.last_token, d] for s, d in zip(seqs, draft_list, strict=True)])
    rows = sampler.build_rows(seqs, 2, draft_list, runner.vocab_size, runner.device)
    drafts = torch.tensor(draft_list, dtype=torch.int64).to(runner.device, non_blocking=True)
    q = stack_draft_probs(seqs, drafts, runner.vocab_size)
    logits, tokens, accepted, new_drafts, new_q = verify_and_draft(runner, n, step, drafts, q, rows)
    extras = token_logprobs(seqs, logits, rows, tokens.reshape(-1), rows_per_seq=2)
    flat = torch.cat([tokens.reshape(-1), accepted.long(), new_drafts]).tolist()
    results = []
    for i in range(n):
        num_acc = flat[2 * n + i]
        emitted = flat[2 * i : 2 * i + 1 + num_acc]
        lps, tops = extras[i]
        results.append(
            SeqResult(
                emitted,
                num_acc,
                None if lps is None else lps[: len(emitted)],
                None if tops is None else tops[: len(emitted)],
                draft_token=flat[3 * n + i],
                draft_probs=None if new_q is None else new_q[i],
                drafted=had_draft[i],
            )
        )
    return results


def verify_and_draft(
    runner: ModelRunner, n: int, step: StepTensors, drafts: Tensor, q: Tensor | None, rows: sampler.SamplingRows
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """The step's forward over (x_t, draft) pairs, verification, draft-extend and the next drafts:
    (target logits [2B, V], tokens [B, 2], accepted [B], next drafts [B], their q or None)."""
    hidden = runner.forward(step)  # [Np, H], Np >= 2B (graph padding)
    logits = runner.logits(hidden[: 2 * n])  # [2B, V]
    tokens, accepted = verify(logits.view(n, 2, -1), drafts, q, rows)
    # MTP pairs: accepted -> (h_t, draft), (h_t+1, bonus); rejected -> (h_t, corrected), then a dead row.
    next_ids = F.pad(tokens.reshape(-1), (0, hidden.shape[0] - 2 * n))
    mtp_hidden = runner.mtp_forward(hidden, next_ids, step)
    pick = torch.arange(n, device=runner.device) * 2 + accepted.long()
    new_drafts, new_q = draft(runner, mtp_hidden[pick], sampler.plain_rows(rows, stride=2))
    return logits, tokens, accepted, new_drafts, new_q


def launch_spec(runner: ModelRunner, seqs: list[Sequence], prev: InFlight | None = None) -> InFlight:
    """An MTP step of greedy sequences whose results stay on the device (`ModelRunner.launch_decode`'s
    overlap, for MTP), the whole step one CUDA graph (`greedy_spec`) where its shape is captured.

    With `prev` (a step not yet read): after an MTP step, each sequence verifies prev's last emitted token
    and next draft, whose positions depend on whether prev accepted its draft: the host prepares them as if
    it had (two past its view), and the device moves rejected ones back by one. After a plain step, each
    verifies prev's token with itself as a placeholder draft (as `run_spec` does after plain steps: exact,
    rarely accepted, not counted as a draft). Without `prev`, a sequence with no draft (after a plain step)
    gets the same placeholder. The rows' sampling must not depend on the host's tokens (greedy, no
    penalties or suppression: `EngineCore` checks)."""
    n = len(seqs)
    drafted: tuple[bool, ...] | None = None
    extra: tuple[Tensor, ...] = ()
    if prev is None:
        drafted = tuple(s.draft_token is not None for s in seqs)
        draft_list = [s.last_token if s.draft_token is None else s.draft_token for s in seqs]
        step = runner.prepare(seqs, [[s.last_token, d] for s, d in zip(seqs, draft_list, strict=True)])
        drafts = torch.tensor(draft_list, dtype=torch.int64).to(runner.device, non_blocking=True)
        if step.block_tables.shape[0] > n:  # graph padding rows
            drafts = F.pad(drafts, (0, step.block_tables.shape[0] - n))
    elif prev.is_spec:
        step = runner.prepare(seqs, [[s.last_token] * 2 for s in seqs], ahead=2)
        tokens, accepted, drafts = prev.padded(step.block_tables.shape[0])
        extra = (tokens, accepted)
    else:  # as if an MTP step had emitted (placeholder, prev's token) and accepted: no position moves back
        step = runner.prepare(seqs, [[s.last_token] * 2 for s in seqs], ahead=1)
        (drafts,), drafted = prev.padded(step.block_tables.shape[0]), (False,) * n
        extra = (torch.stack([drafts, drafts], dim=1), torch.ones_like(drafts))
    inputs = (step.input_ids, step.positions, step.slot_mapping, step.block_tables, drafts, *extra)
    flat = runner.graphed("spec", functools.partial(greedy_spec, runner), inputs, step.use_graph)
    b = step.block_tables.shape[0]
    tokens, accepted, new_drafts = flat[: 2 * b].view(b, 2)[:n], flat[2 * b : 3 * b][:n], flat[3 * b :][:n]
    return InFlight.launched(seqs, tokens, accepted, new_drafts, None if b > n else flat, drafted)


def capture_graphs(runner: ModelRunner, max_batch: int) -> None:
    """`ModelRunner.capture_graphs` with the MTP layer, and the overlapped greedy MTP step's graphs (`launch_spec`:
    alone, and after a step ahead of either mode) at every batch bucket up to `max_batch`."""
    runner.capture_graphs(max_batch, with_mtp=True)
    if runner.graphs is None:
        return
    spec = functools.partial(greedy_spec, runner)
    for b in batch_buckets(max_batch):
        inputs = (*runner.padding_step(b, 2), torch.zeros(b, dtype=torch.int64, device=runner.device))  # + drafts
        for prev in ((), runner.padding_spec_results(b)):
            runner.graphed("spec", spec, inputs + prev, True)


def greedy_spec(
    runner: ModelRunner,
    ids: Tensor,
    pos: Tensor,
    slots: Tensor,
    tables: Tensor,
    drafts: Tensor,
    prev_tokens: Tensor | None = None,
    prev_accepted: Tensor | None = None,
    kernels: Kernels | None = None,
) -> Tensor:
    """A greedy MTP step over B sequences' (x_t, draft) pairs, with no host sync: tokens [B, 2] | accepted [B] |
    next drafts [B] in one int64 tensor. With prev's tokens [B, 2] and accepted [B], x_t is prev's last
    emitted token and each pair moves back one position where prev rejected its draft."""
    b = tables.shape[0]
    if prev_tokens is not None and prev_accepted is not None:
        pos, slots, last = after_spec(pos, tables, prev_tokens, prev_accepted, runner.block_size)
        ids = torch.stack([last, drafts], dim=1).reshape(-1)
    hidden = runner.backbone(ids, pos, slots, tables, kernels=kernels)  # [2B, H]
    tokens = runner.logits(hidden).argmax(-1).view(b, 2)
    accepted = (tokens[:, 0] == drafts).long()
    # MTP pairs: accepted -> (h_t, draft), (h_t+1, bonus); rejected -> (h_t, corrected), then a dead row.
    mtp_hidden = runner.mtp_backbone(hidden, tokens.reshape(-1), pos, slots, tables, kernels=kernels)
    pick = torch.arange(b, device=pos.device) * 2 + accepted
    new_drafts = runner.logits(mtp_hidden[pick]).argmax(-1)
    return torch.cat([tokens.reshape(-1), accepted, new_drafts])
