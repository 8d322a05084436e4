"""The synchronous engine: requests in, one `step()` at a time, output chunks out (no threads, no asyncio)."""

from __future__ import annotations

import itertools
import operator
import statistics
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from services.worker.engine_api import (
    EngineLoad,
    GenerateInput,
    InvalidRequest,
    OutputChunk,
    SamplingConfig,
    resolve_max_new_tokens,
)
from services.worker.engines.torch import mtp
from services.worker.engines.torch.block_manager import BlockManager
from services.worker.engines.torch.cuda_graphs import batch_bucket
from services.worker.engines.torch.grammar import Grammar, GrammarCompiler
from services.worker.engines.torch.model_runner import RAGGED_TOKEN_MULTIPLE, InFlight, ModelRunner, SeqResult
from services.worker.engines.torch.scheduler import Scheduler, SchedulerConfig
from services.worker.engines.torch.sequence import Sequence
from services.worker.engines.torch.stop import StopChecker
from services.worker.model.mimo import MiMoConfig, MiMoForCausalLM

if TYPE_CHECKING:
    from tokenizers import Tokenizer

THROUGHPUT_WINDOW_S = 10.0

RequestOutput = tuple[str, OutputChunk]  # (request id, chunk)


# A prompt token's attention FLOPs over its linears', per key, priced at this rate ratio on the H200 (bench/
# ENGINE_NOTES.md, 2026-12-03): the kernels give 0.42-0.50 (a 512-token chunk at 4K / 8K context at 262 / 318
# TFLOP/s in `bench.attention`, a mixed step's 544-row GEMMs at ~630); the 8K prompt's mixed steps beside 32
# streams give ~0.65 (its 512-token chunk at 7.9K context took 23.4 ms, a 1,024-token one at context 0 28.4).
ATTENTION_RATE = 0.6


def attention_context(cfg: MiMoConfig) -> float:
    """The context at which a prompt token's attention takes as long as its linears on the GPU: linear
    FLOPs per token (2 x the layer's weights) over attention's per key (4 x heads x head_dim), at the
    attention kernel's lower rate. MiMo-7B: about 13,000 tokens."""
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    weights = cfg.hidden_size * (2 * q + 2 * kv) + 3 * cfg.hidden_size * cfg.intermediate_size
    return ATTENTION_RATE * 2 * weights / (4 * q)


@dataclass(frozen=True, slots=True)
class CoreConfig:
    num_blocks: int
    block_size: int = 16
    max_running_requests: int = 64
    max_batch_tokens: int = 8192
    is_mtp_enabled: bool = True
    use_cuda_graphs: bool = True
    capture_at_start: bool = True  # the decode graphs of every batch bucket, before the first request
    ragged_graphs: bool = True  # CUDA graphs: prefill and mixed steps too, padded (captured on first sight)
    compile_kernels: bool = True  # CUDA only: torch.compile the layers' elementwise pieces
    overlap_decode: bool | None = None  # launch each plain decode step before reading the last (None: on CUDA)
    max_context_length: int = 32768
    eos_token_ids: tuple[int, ...] = ()
    attention_context: float | None = None  # the budget's cost of attention (Scheduler); None: the model's on CUDA


class EngineCore:
    """Scheduler + block manager + model runner; `step()` runs one batched forward and returns its chunks."""

    def __init__(self, model: MiMoForCausalLM, cfg: CoreConfig, tokenizer: Tokenizer | None = None) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.runner = ModelRunner(
            model, cfg.block_size, cfg.num_blocks, cfg.use_cuda_graphs, cfg.compile_kernels, cfg.ragged_graphs
        )
        self.is_mtp = cfg.is_mtp_enabled and self.runner.has_mtp
        self.blocks = BlockManager(cfg.num_blocks, cfg.block_size)
        context = cfg.attention_context
        if context is None:
            context = attention_context(model.config) if self.runner.device.type == "cuda" else 0.0
        multiple = RAGGED_TOKEN_MULTIPLE if self.runner.pad_ragged and self.runner.use_kernels else 1
        sched_cfg = SchedulerConfig(
            cfg.max_running_requests, cfg.max_batch_tokens, int(self.is_mtp), context, token_multiple=multiple
        )
        self.scheduler = Scheduler(sched_cfg, self.blocks)
        self._seq_ids = itertools.count()
        self._recent: deque[tuple[float, int]] = deque()  # (time, tokens generated) per step
        self.num_draft_tokens = 0
        self.num_accepted_tokens = 0
        self.num_decode_steps = 0  # sequence-steps of MTP decoding
        self._grammars: GrammarCompiler | None = None  # built on the first constrained request
        self._inflight: InFlight | None = None  # a decode step launched ahead, not yet read (`_overlap`)
        is_cuda = self.runner.device.type == "cuda"
        self.is_overlap = is_cuda if cfg.overlap_decode is None else cfg.overlap_decode
        self._last_decode: float | None = None  # when the last decode step's results were read (MTP timing)
        self._last_mode: bool | None = None  # whether that step drafted
        self._num_launched = 0  # decode steps launched since then
        if cfg.capture_at_start:
            with torch.inference_mode():
                if self.is_mtp:
                    mtp.capture_graphs(self.runner, cfg.max_running_requests)
                else:
                    self.runner.capture_graphs(cfg.max_running_requests, with_mtp=False)

    @property
    def capacity_tokens(self) -> int:
        return self.cfg.num_blocks * self.cfg.block_size

    def add_request(self, req: GenerateInput) -> list[RequestOutput]:
        """Queue the request's n samples; returns chunks only for samples that end at once (max_new_tokens 0)."""
        s = req.sampling
        max_new = resolve_max_new_tokens(s, len(req.input_ids), self.cfg.max_context_length)
        out: list[RequestOutput] = []
        grammar = self._grammar(s)
        for index in range(s.n):
            gen = None
            if s.seed is not None:
                gen = torch.Generator(self.runner.device).manual_seed(s.seed + index)
            seq = Sequence(
                seq_id=next(self._seq_ids),
                request_id=req.request_id,
                index=index,
                token_ids=list(req.input_ids),
                num_prompt_tokens=len(req.input_ids),
                sampling=s,
                max_new_tokens=max_new,
                stop=StopChecker.build(s, self.cfg.eos_token_ids, max_new, self.tokenizer),
                return_logprob=req.return_logprob,
                top_logprobs_num=req.top_logprobs_num,
                generator=gen,
                grammar=grammar.copy() if grammar is not None else None,
            )
            if max_new <= 0:
                seq.num_cached_tokens = 0
                seq.finish("length")
                out.append((req.request_id, self._chunk(seq, [], SeqResult([]))))
            else:
                self.scheduler.add(seq)
        return out

    def _grammar(self, s: SamplingConfig) -> Grammar | None:
        if s.constraint is None:
            return None
        if self.tokenizer is None:
            raise InvalidRequest(f"sampling_params.{s.constraint[0]}", "structured output needs the model's tokenizer")
        if self._grammars is None:
            self._grammars = GrammarCompiler(self.tokenizer, self.runner.vocab_size, self.cfg.eos_token_ids)
        return self._grammars.grammar(*s.constraint)

    def abort_request(self, request_id: str) -> list[RequestOutput]:
        """Remove the request's unfinished samples (their KV blocks are freed); a final 'abort' chunk each."""
        out = []
        for seq in self.scheduler.remove(request_id):
            seq.finish("abort")
            out.append((request_id, self._chunk(seq, [], SeqResult([]))))
        return out

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work or self._inflight is not None

    def step(self) -> list[RequestOutput]:
        """Schedule, run one forward (prefill or decode) and turn the results into chunks."""
        if self._inflight is not None:
            return self._overlap(self._inflight)
        batch = self.scheduler.schedule()
        if batch is None:
            self._last_decode = None  # idle: the next step's period would count the wait
            return []
        if self.is_overlap and not batch.is_prefill and all(map(_device_only, batch.seqs)):
            with torch.inference_mode():
                pending = self._launch(batch.seqs, None)
            if pending is not None:
                return self._overlap(pending)
        num_graphs, drafted = self.runner.num_graphs, False
        accepted: list[int] = []
        with torch.inference_mode():
            if not self.is_mtp:
                results = self.runner.run_plain(batch.seqs, batch.is_prefill)
            elif batch.is_prefill:
                results = mtp.run_prefill(self.runner, batch.seqs, batch_bucket(len(self.scheduler.running)))
            else:
                results, drafted, accepted = mtp.run_decode(self.runner, batch.seqs)
                self._num_launched += 1
        is_spec = self.is_mtp and not batch.is_prefill
        out = []
        for seq, res in zip(batch.seqs, results, strict=True):
            if res.num_prefilled:  # a prompt chunk short of its end: KV written, nothing to emit yet
                seq.num_computed_tokens += res.num_prefilled
            else:
                out.append((seq.request_id, self._apply(seq, res, is_spec)))
        self._recent.append((time.monotonic(), sum(len(c.token_ids) for _, c in out)))
        self.blocks.publish_events()  # this step's KV events, one batch
        if is_spec:
            self._time_decode(len(batch.seqs), drafted, accepted, self.runner.num_graphs == num_graphs)
        else:
            self._last_decode = None
        return out

    def _overlap(self, pending: InFlight) -> list[RequestOutput]:
        """Launch the next decode step on `pending`'s results (still on the device), then read `pending`:
        the host's bookkeeping and the next step's preparation run while the GPU computes. A step ahead
        is launched while nothing waits to be admitted, for the sequences still running (one that
        finished or was aborted since `pending` was launched drops out); a sequence that stops on
        `pending`'s tokens wastes its row of the step ahead, nothing else."""
        num_graphs = self.runner.num_graphs
        seqs, blocks, running = pending.seqs, self.blocks, self.scheduler.running
        live = {id(s) for s in running}  # aborted (or failed) since the launch: its results are dropped
        kept = [i for i, s in enumerate(seqs) if id(s) in live and not s.is_finished]
        reach = 3 if self.is_mtp else 1  # positions past the newest token the step ahead may write (MTP after MTP)
        self._inflight = None
        if (
            not self.scheduler.waiting
            and len(running) == len(kept)
            and all(map(operator.is_, running, (seqs[i] for i in kept)))
        ):
            # A sequence whose last token `pending` samples drops out of the step ahead.
            rows = [
                i
                for i in kept
                if _device_only(seqs[i], ahead=1)
                and seqs[i].num_tokens + reach <= self.cfg.max_context_length
                and blocks.ensure_slots(seqs[i], seqs[i].num_tokens + reach)
            ]
            if rows:
                with torch.inference_mode():
                    prev = pending if len(rows) == len(seqs) else pending.rows(rows)
                    self._inflight = self._launch(prev.seqs, prev)
        results = pending.results()
        out = [
            (seq.request_id, self._apply(seq, res, pending.is_spec))
            for seq, res in zip(seqs, results, strict=True)
            if id(seq) in live and not seq.is_finished
        ]
        self._recent.append((time.monotonic(), sum(len(c.token_ids) for _, c in out)))
        self.blocks.publish_events()
        if self.is_mtp:
            accepted = [r.num_accepted for r in results if r.drafted]  # not placeholders after plain steps
            # Not timed when the step ahead is of the other mode: its launch is in this period.
            is_timed = self._inflight is None or self._inflight.is_spec == pending.is_spec
            self._time_decode(len(seqs), pending.is_spec, accepted, is_timed and self.runner.num_graphs == num_graphs)
        return out

    def _time_decode(self, num_seqs: int, is_spec: bool, accepted: list[int], is_timed: bool) -> None:
        """Give the MTP policy a decode step's cost: the time since the last decode step's results were read,
        over the decode steps launched in it. The periods between reads share out the engine's whole time,
        overlapped or not (the host's work before and after the forward, the engine loop's, the GPU's not
        hidden under them), and a step's cost is its launch's share: a period with no launch (a drain, the
        run's last read) joins the next one, and one with two (`step` launching a step and the one ahead)
        halves. A period after a prefill, an idle spell, a graph capture or a step of the other mode (it
        holds the switch) is not timed, nor (`is_timed` False) one that launched the other mode. `accepted`: 0 or
        1 for each real draft the step verified."""
        policy, bucket = self.runner.spec_policy, batch_bucket(num_seqs)
        acceptance = statistics.fmean(accepted) if accepted else None
        now = time.perf_counter()
        last, launched, self._num_launched = self._last_decode, self._num_launched, 0
        is_timed = is_timed and last is not None and self._last_mode == is_spec
        if is_timed and not launched:  # a drained read: its period joins the next
            policy.record(bucket, is_spec, None, acceptance, len(accepted))
            return
        seconds = (now - last) / launched if is_timed and last is not None else None
        policy.record(bucket, is_spec, seconds, acceptance, len(accepted))
        self._last_decode, self._last_mode = now, is_spec

    def _launch(self, seqs: list[Sequence], prev: InFlight | None) -> InFlight | None:
        """The next decode step, launched without reading `prev`, in the mode the MTP policy chooses (a switch
        between MTP and plain steps stays overlapped); None when it needs the host (sampled MTP rows)."""
        if not self.is_mtp:
            return self.runner.launch_decode(seqs, prev)
        if not all(s.is_greedy for s in seqs):
            return None
        self._num_launched += 1
        if self.runner.spec_policy.should_draft(batch_bucket(len(seqs))):
            return mtp.launch_spec(self.runner, seqs, prev)
        return self.runner.launch_decode(seqs, prev)

    def _apply(self, seq: Sequence, res: SeqResult, is_spec: bool) -> OutputChunk:
        """Append the step's tokens up to the first stop; free the blocks of a finished sequence."""
        seq.num_computed_tokens = seq.num_tokens + res.num_accepted
        if is_spec and res.drafted:
            seq.num_draft_tokens += 1
            seq.num_accepted_tokens += res.num_accepted
            self.num_draft_tokens += 1
            self.num_accepted_tokens += res.num_accepted
            self.num_decode_steps += 1
        new: list[int] = []
        for token in res.token_ids:
            seq.token_ids.append(token)
            new.append(token)
            match = seq.stop.check(seq.token_ids, seq.num_output_tokens)
            if match is not None:
                seq.matched_token_id, seq.matched_stop_str = match.token_id, match.stop_str
                seq.finish(match.reason)
                break
        if seq.grammar is not None:
            seq.grammar.advance(new)
        if seq.is_finished:
            self.scheduler.finish(seq)
        else:
            seq.num_computed_tokens = min(seq.num_computed_tokens, seq.num_tokens - 1)
            self.blocks.commit_full_blocks(seq)
            seq.draft_token, seq.draft_probs = res.draft_token, res.draft_probs
        return self._chunk(seq, new, res)

    def _chunk(self, seq: Sequence, new: list[int], res: SeqResult) -> OutputChunk:
        done = seq.is_finished
        spec = self.is_mtp and done
        return OutputChunk(
            index=seq.index,
            token_ids=tuple(new),
            prompt_tokens=seq.num_prompt_tokens,
            completion_tokens=seq.num_output_tokens,
            cached_tokens=max(0, seq.num_cached_tokens),
            logprobs=tuple(res.logprobs[: len(new)]) if res.logprobs else (),
            top_logprobs=tuple(tuple(t) for t in res.top_logprobs[: len(new)]) if res.top_logprobs else (),
            finished=done,
            finish_reason=seq.finish_reason if done else None,
            matched_token_id=seq.matched_token_id,
            matched_stop_str=seq.matched_stop_str,
            output_ids=tuple(seq.output_ids) if done else (),
            spec_accepted_tokens=seq.num_accepted_tokens if spec else 0,
            spec_draft_tokens=seq.num_draft_tokens if spec else 0,
        )

    def load(self) -> EngineLoad:
        now = time.monotonic()
        while self._recent and now - self._recent[0][0] > THROUGHPUT_WINDOW_S:
            self._recent.popleft()
        span = now - self._recent[0][0] if len(self._recent) > 1 else 0.0
        waiting = list(self.scheduler.waiting)
        return EngineLoad(
            running_requests=len(self.scheduler.running),
            waiting_requests=len(waiting),
            used_kv_tokens=self.blocks.num_used_tokens,
            max_kv_tokens=self.capacity_tokens,
            cache_hit_rate=self.blocks.hit_rate,
            gen_throughput_tps=sum(n for _, n in self._recent) / span if span > 0 else 0.0,
            waiting_uncached_tokens=sum(s.num_tokens for s in waiting),
            max_running_requests=self.cfg.max_running_requests,
            spec_accept_length=self.accept_length if self.is_mtp else None,
            spec_accept_rate=(self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else 0.0)
            if self.is_mtp
            else None,
        )

    @property
    def accept_length(self) -> float:
        """Mean tokens emitted per sequence per MTP decode step (1 + accepted drafts)."""
        return 1.0 + self.num_accepted_tokens / self.num_decode_steps if self.num_decode_steps else 1.0

    def flush_cache(self) -> bool:
        if self.has_work:
            return False
        self.blocks.reset_prefix_cache()
        self.blocks.publish_events()
        return True


def _device_only(seq: Sequence, ahead: int = 0) -> bool:
    """The sequence's next token can be chosen without the host's copy of its tokens `ahead` steps back (no
    penalties, grammar, logprobs or min_new_tokens left), and it may still emit a token `ahead` steps on."""
    s = seq.sampling
    return (
        seq.grammar is None
        and not seq.return_logprob
        and s.repetition_penalty == 1
        and not s.frequency_penalty
        and not s.presence_penalty
        and seq.stop.min_new_tokens <= seq.num_output_tokens
        and seq.num_output_tokens + 1 + ahead <= seq.max_new_tokens
    )
