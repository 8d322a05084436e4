"""One sample's state in the engine: its tokens, KV blocks, progress, sampling settings and draft."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from services.worker.engine_api import FinishReason, SamplingConfig
from services.worker.engines.torch.grammar import Grammar
from services.worker.engines.torch.stop import StopChecker


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(slots=True, eq=False)
class Sequence:
    """A prompt plus the tokens sampled so far; the newest token is never in the KV cache yet.

    Invariant: KV entries exist for positions < num_computed_tokens <= num_tokens - 1, so each step
    feeds the tokens from num_computed_tokens on (the whole uncached prompt, or just the newest token).
    """

    seq_id: int
    request_id: str
    index: int  # sample index within its request (n > 1)
    token_ids: list[int]
    num_prompt_tokens: int
    sampling: SamplingConfig
    max_new_tokens: int
    stop: StopChecker
    return_logprob: bool = False
    top_logprobs_num: int = 0
    generator: torch.Generator | None = None  # per-request seed
    status: SeqStatus = SeqStatus.WAITING
    num_computed_tokens: int = 0
    num_scheduled_tokens: int = 0  # tokens the current step feeds (a prompt chunk, or 1 when decoding)
    num_cached_tokens: int = -1  # prompt tokens found in the prefix cache at first admission; -1 before
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)  # hash chain of the full blocks, block by block
    draft_token: int | None = None  # MTP's proposal for the token after the newest one
    draft_probs: torch.Tensor | None = None  # [V] the distribution it was drawn from (sampled requests)
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    num_decode_steps: int = 0
    finish_reason: FinishReason | None = None
    matched_token_id: int | None = None
    matched_stop_str: str | None = None
    grammar: Grammar | None = None  # structured output (grammar.py): what the sample may write next

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def last_token(self) -> int:
        return self.token_ids[-1]

    @property
    def is_greedy(self) -> bool:
        return self.sampling.is_greedy

    @property
    def is_finished(self) -> bool:
        return self.status is SeqStatus.FINISHED

    def pending_tokens(self) -> list[int]:
        """The tokens this step feeds: the scheduled chunk from num_computed_tokens on (all of them if unset)."""
        end = self.num_computed_tokens + self.num_scheduled_tokens if self.num_scheduled_tokens else None
        return self.token_ids[self.num_computed_tokens : end]

    @property
    def is_chunk_partial(self) -> bool:
        """This step's prompt chunk stops before the newest token: nothing is sampled for it yet."""
        return 0 < self.num_scheduled_tokens < self.num_tokens - self.num_computed_tokens

    def finish(self, reason: FinishReason) -> None:
        self.status = SeqStatus.FINISHED
        self.finish_reason = reason
        self.draft_token, self.draft_probs = None, None

    def reset_for_recompute(self) -> None:
        """Preempted: drop the KV (the caller frees the blocks) and the draft; re-prefill later."""
        self.status = SeqStatus.WAITING
        self.num_computed_tokens = self.num_scheduled_tokens = 0
        self.block_table, self.block_hashes = [], []
        self.draft_token, self.draft_probs = None, None
