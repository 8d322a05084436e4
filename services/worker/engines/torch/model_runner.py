"""Batched prefill and decode of MiMo over the paged KV cache, on CPU or CUDA (graphs for fixed shapes)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from services.worker.engines.torch import sampler
from services.worker.engines.torch.attention import AttnMeta, KernelMeta, StepTensors, attn_meta, kernel_meta
from services.worker.engines.torch.cpu_layers import CpuLayer, PackedLinear, cpu_layer_forward, packed_linear_works
from services.worker.engines.torch.cuda_graphs import (
    GraphCache,
    batch_bucket,
    batch_buckets,
    column_bucket,
    token_bucket,
)
from services.worker.engines.torch.kernels import triton_available
from services.worker.engines.torch.layers import Kernels, fuse_layer, layer_forward
from services.worker.engines.torch.sequence import Sequence
from services.worker.engines.torch.spec_policy import SpecPolicy
from services.worker.model.mimo import MiMoForCausalLM, MTPLayer

MAX_GRAPH_TOKENS_PER_SEQ = 2  # decode (1) and MTP verify (2): uniform graphs
# Kernel path: prefill and mixed steps of up to this many tokens replay graphs too, padded to a multiple of
# `RAGGED_TOKEN_MULTIPLE` tokens (the scheduler fills the padding with prompt tokens where it can). Eagerly,
# launching such a step's ~600 kernels takes the host about as long as the GPU takes to run them
# (bench/ENGINE_NOTES.md, 2026-12-04), so the streams beside a long prompt waited on the host.
MAX_RAGGED_GRAPH_TOKENS = 1024
RAGGED_TOKEN_MULTIPLE = 64
RAGGED_GRAPH_PROMPTS = 4  # prompt chunks a padded step's query-block map has room for (more: eager)


def query_maps(lengths: list[int], rep: int, dtype: torch.dtype, pad: bool) -> tuple[list[int], list[int], bool]:
    """Kernel path, a step that is not a uniform graph: its programs' maps (`query_blocks`), and whether they
    are padded to a ragged graph's shape (entries for the last sequence of `batch_bucket(n + 1)`, an empty one,
    that read nothing): with `pad`, steps of up to `MAX_RAGGED_GRAPH_TOKENS` with room in the map."""
    from services.worker.engines.torch.kernels.paged_attention import big_blocks_bound, query_blocks

    small, big = query_blocks(lengths, rep, dtype)
    num, num_rows = sum(lengths), batch_bucket(len(lengths) + 1)
    if not pad or num > MAX_RAGGED_GRAPH_TOKENS:
        return small, big, False
    num_big = big_blocks_bound(token_bucket(num, RAGGED_TOKEN_MULTIPLE), rep, dtype, RAGGED_GRAPH_PROMPTS)
    if len(big) // 2 > num_big:  # more prompt chunks than the padded map has room for
        return small, big, False
    empty = [num_rows - 1, 0]
    return small + empty * (num_rows - len(small) // 2), big + empty * (num_big - len(big) // 2), True


@dataclass(frozen=True, slots=True)
class SeqResult:
    """What one step produced for one sequence (tokens in order; the step's forward is done)."""

    token_ids: list[int]
    num_accepted: int = 0  # draft tokens the target accepted (MTP decode)
    logprobs: list[float] | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = None
    draft_token: int | None = None
    draft_probs: Tensor | None = None
    drafted: bool = False  # an MTP decode step verified a draft for this sequence
    num_prefilled: int = 0  # a prompt chunk short of the newest token: tokens fed, nothing emitted


def rope_tables(
    head_dim: int, theta: float, max_positions: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """cos, sin [P, D] for positions 0..P-1, computed exactly as MiMo's `rotary_cos_sin`."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    inv_freq = 1.0 / (theta**exponents)
    freqs = torch.arange(max_positions, device=device).float()[:, None] * inv_freq  # [P, D/2]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


class ModelRunner:
    """Owns the paged KV cache (one more layer for MTP) and runs forwards over it.

    Cache layout: [layers, (num_blocks + 1) * block_size, kv_heads, head_dim]; the extra block is
    scratch, written by padding tokens and gathered (masked) by padded block tables.
    """

    def __init__(
        self,
        model: MiMoForCausalLM,
        block_size: int,
        num_blocks: int,
        use_cuda_graphs: bool = True,
        compile_kernels: bool = True,
        ragged_graphs: bool = True,
    ) -> None:
        cfg = model.config
        self.model = model
        self.block_size = block_size
        self.scratch_block = num_blocks
        self.device = model.lm_head.weight.device
        self.dtype = model.lm_head.weight.dtype
        self.vocab_size = cfg.vocab_size
        self.has_mtp = cfg.num_nextn_predict_layers > 0
        num_layers = cfg.num_hidden_layers + int(self.has_mtp)
        shape = (num_layers, (num_blocks + 1) * block_size, cfg.num_key_value_heads, cfg.head_dim)
        self.k_cache = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.v_cache = torch.zeros(shape, dtype=self.dtype, device=self.device)
        cos, sin = rope_tables(cfg.head_dim, cfg.rope_theta, cfg.max_position_embeddings, self.dtype, self.device)
        half = cfg.head_dim // 2
        self.cos, self.sin_signed = cos, torch.cat([-sin[:, :half], sin[:, half:]], dim=-1)
        self.graphs = GraphCache() if use_cuda_graphs and self.device.type == "cuda" else None
        # `ragged_graphs`: prefill and mixed steps padded (kernel path) and replayed from graphs that share one
        # memory pool (one is replayed at a time, and each step's outputs are read before the next replays).
        self.pad_ragged = self.graphs is not None and ragged_graphs
        self.ragged_graphs = GraphCache(share_pool=True) if self.pad_ragged else None
        fuse = lambda layer: fuse_layer(layer, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim)  # noqa: E731
        self.layers = [fuse(layer) for layer in model.model.layers]
        self.mtp_layer = fuse(model.model.mtp_layers[0]) if self.has_mtp else None
        self.num_q_per_kv = cfg.num_attention_heads // cfg.num_key_value_heads
        is_cuda = self.device.type == "cuda"
        sample = torch.randn(4, cfg.hidden_size, dtype=self.dtype, device=self.device)
        self.kernels = Kernels.compiled(sample, rowwise=self.has_mtp) if compile_kernels and is_cuda else Kernels()
        # Steps that run outside a graph (prefill, mixed, ragged) use the plain ATen pieces: a compiled
        # region costs ~50 us of guard checks per call on the host, which bound those steps (bench/ENGINE_NOTES.md).
        self.eager = Kernels()
        # Triton paged attention on CUDA (in place over block tables); the exact gather path elsewhere.
        self.use_kernels = triton_available(self.device.type)
        self.spec_policy = SpecPolicy()  # MTP engines: draft or not, per decode step
        self.num_sms = torch.cuda.get_device_properties(self.device).multi_processor_count if is_cuda else 1
        # CPU: oneDNN GEMMs over prepacked weights (cpu_layers.py); layer i, the MTP layer last, and the LM head.
        self.cpu_layers: list[CpuLayer] | None = None
        self.cpu_lm_head: PackedLinear | None = None
        if self.device.type == "cpu" and packed_linear_works(self.dtype):
            self.cpu_layers = [CpuLayer.of(w) for w in [*self.layers, *([self.mtp_layer] if self.mtp_layer else [])]]
            self.cpu_lm_head = PackedLinear(model.lm_head.weight.detach(), _detached(model.lm_head.bias))

    # ---- inputs ------------------------------------------------------------------------------

    def prepare(self, seqs: list[Sequence], new_tokens: list[list[int]], ahead: int = 0) -> StepTensors:
        """Host-side: flatten each sequence's new tokens (from its num_computed_tokens on) into tensors.
        `ahead`: positions start that many past num_computed_tokens (a step launched before the host has
        read the previous one's tokens: `launch_decode`)."""
        bs, lengths = self.block_size, [len(t) for t in new_tokens]
        num_q, is_uniform = max(lengths), len(set(lengths)) == 1
        num_seqs, num = len(seqs), sum(lengths)
        lens = np.array(lengths, dtype=np.int64)
        starts = np.fromiter((s.num_computed_tokens + ahead for s in seqs), np.int64, num_seqs)
        num_cols = int(-(-(starts + lens).max() // bs))
        use_graph = self.graphs is not None and is_uniform and num_q <= MAX_GRAPH_TOKENS_PER_SEQ
        maps = None  # kernel path, not a uniform graph: the programs' maps, padded where it fits a ragged graph
        if self.use_kernels and not use_graph:
            maps = query_maps(lengths, self.num_q_per_kv, self.dtype, self.pad_ragged)
        is_ragged = maps is not None and maps[2]  # a padded prefill or mixed step (a ragged graph)
        num_rows, num_all = num_seqs, num
        if use_graph:  # pad to a captured shape: padding rows feed token 0 at position 0 into the scratch block
            num_cols, num_rows = column_bucket(num_cols), batch_bucket(num_seqs)
            num_all += (num_rows - num_seqs) * num_q
        elif is_ragged:  # padding tokens (no sequence's) and empty sequences (no tokens; the maps' padding)
            num_cols, num_rows = column_bucket(num_cols), batch_bucket(num_seqs + 1)
            num_all = token_bucket(num, RAGGED_TOKEN_MULTIPLE)
        # One host buffer and one copy to the device: ids, positions and slots [3, N], then the block tables
        # [B, M]. Built in numpy: only real table entries pass through Python (beside a long prompt's table
        # the short ones are mostly padding), and each token's position and slot come from whole-array ops.
        host = np.zeros(3 * num_all + num_rows * num_cols, dtype=np.int64)
        ids, positions, slots = host[: 3 * num_all].reshape(3, num_all)
        tables = host[3 * num_all :].reshape(num_rows, num_cols)
        tables.fill(self.scratch_block)
        for i, seq in enumerate(seqs):  # padding rows keep the scratch block
            table = seq.block_table[:num_cols]
            tables[i, : len(table)] = table
        ids[:num] = np.fromiter(itertools.chain.from_iterable(new_tokens), np.int64, num)
        if is_uniform:
            seq_of = np.arange(num_seqs).repeat(num_q)
            positions[:num] = (starts[:, None] + np.arange(num_q)).ravel()
        else:
            seq_of = np.arange(num_seqs).repeat(lens)
            positions[:num] = starts[seq_of] + np.arange(num) - (np.cumsum(lens) - lens).repeat(lens)
        pos = positions[:num]
        slots[:num] = tables[seq_of, pos // bs] * bs + pos % bs
        slots[num:] = self.scratch_block * bs
        packed = torch.from_numpy(host).to(self.device, non_blocking=True)
        flat = packed[: 3 * num_all].view(3, num_all)
        block_tables = packed[3 * num_all :].view(num_rows, num_cols)
        if is_uniform and not is_ragged:
            return StepTensors(flat[0], flat[1], flat[2], block_tables, use_graph=use_graph, max_query_len=num_q)
        if maps is not None:  # kernel path: ragged rows need only their starts, and the programs that hold rows
            small, big, _ = maps
            first_rows = [0, *itertools.accumulate(lengths)] + [num] * (num_rows - num_seqs)
            packed = torch.tensor([*first_rows, *small, *big], dtype=torch.int32).to(self.device, non_blocking=True)
            query_start, both = packed[: num_rows + 1], packed[num_rows + 1 :].view(-1, 2)
            q_blocks = (both[: len(small) // 2], both[len(small) // 2 :])
            # A padded step's launch shape is its token count (> 16 rows: the prefill tile), from its shapes.
            num_q = num_all if is_ragged else num_q
            return StepTensors(
                flat[0], flat[1], flat[2], block_tables, use_graph=is_ragged, query_start=query_start,
                max_query_len=num_q, q_blocks=q_blocks,
            )  # fmt: skip
        first = [sum(lengths[:i]) for i in range(len(lengths))]  # each sequence's first row
        pad = [first[i] + t if t < n else num for i, n in enumerate(lengths) for t in range(num_q)]
        unpad = [i * num_q + t for i, n in enumerate(lengths) for t in range(n)]
        index = torch.tensor(pad + unpad, dtype=torch.int64).to(self.device, non_blocking=True)
        return StepTensors(
            flat[0], flat[1], flat[2], block_tables, index[: len(pad)], index[len(pad) :], max_query_len=num_q
        )

    # ---- forwards ----------------------------------------------------------------------------

    def forward(self, step: StepTensors) -> Tensor:
        """The backbone over the step's tokens: final-normed hidden states [N, H] (N includes padding)."""
        inputs = (step.input_ids, step.positions, step.slot_mapping, step.block_tables)
        if step.use_graph and step.q_blocks is not None:  # a padded prefill or mixed step
            return self.ragged("target", self.ragged_backbone, (*inputs, *self._ragged_inputs(step)))
        if step.use_graph:  # (only where graphs are on: `prepare`)
            return self.graphed("target", self.backbone, inputs, True)
        return self.backbone(
            *inputs, step.pad_index, step.unpad_index, step.query_start, step.max_query_len, step.q_blocks, self.eager
        )

    def mtp_forward(self, hidden: Tensor, next_ids: Tensor, step: StepTensors) -> Tensor:
        """The MTP layer at the step's positions t, from hidden h_t [N, H] and tokens x_{t+1} [N] -> [N, H]."""
        inputs = (hidden, next_ids, step.positions, step.slot_mapping, step.block_tables)
        if step.use_graph and step.q_blocks is not None:  # a padded prefill or mixed step
            return self.ragged("mtp", self.ragged_mtp_backbone, (*inputs, *self._ragged_inputs(step)))
        if step.use_graph:  # (only where graphs are on: `prepare`)
            return self.graphed("mtp", self.mtp_backbone, inputs, True)
        return self.mtp_backbone(
            *inputs, step.pad_index, step.unpad_index, step.query_start, step.max_query_len, step.q_blocks, self.eager
        )

    def graphed(self, name: str, fn: Callable[..., Tensor], inputs: tuple[Tensor, ...], use_graph: bool) -> Tensor:
        """`fn(*inputs)` replayed from a CUDA graph keyed by `name` and the inputs' shapes where `use_graph` (a
        step padded to a captured shape), else run now with the plain ATen pieces (`fn(*inputs, kernels=...)`)."""
        if self.graphs is not None and use_graph:
            return self.graphs.run((name, self.use_kernels, *(tuple(t.shape) for t in inputs)), fn, inputs)
        return fn(*inputs, kernels=self.eager)

    def ragged(self, name: str, fn: Callable[..., Tensor], inputs: tuple[Tensor, ...]) -> Tensor:
        """A padded prefill or mixed step: `fn(*inputs)` replayed from its ragged graph (keyed by `name` and the
        shapes; captured on first sight)."""
        assert self.ragged_graphs is not None  # (`pad_ragged`: `prepare` pads only then)
        return self.ragged_graphs.run((name, *(tuple(t.shape) for t in inputs)), fn, inputs)

    @staticmethod
    def _ragged_inputs(step: StepTensors) -> tuple[Tensor, Tensor, Tensor]:
        assert step.query_start is not None and step.q_blocks is not None
        return step.query_start, *step.q_blocks

    def capture_graphs(self, max_batch: int, with_mtp: bool) -> None:
        """Capture the decode steps' graphs of every batch bucket up to `max_batch` at the narrowest block
        table, before the first request (SGLang captures its batch sizes at start-up too): a batch that
        shrinks as its sequences finish then replays at each new size instead of paying a capture (tens of
        ms) mid-stream. With `with_mtp`, the verify's and the MTP layer's too (`mtp.capture_graphs` adds the
        overlapped MTP step's). Their inputs are padding rows: they write only the scratch block."""
        if self.graphs is None:
            return
        for b in batch_buckets(max_batch):
            plain = self.padding_step(b, 1)
            self.graphed("target", self.backbone, plain, True)  # sampled rows: a plain step
            if with_mtp:  # and an MTP verify, then its MTP layer
                verify = self.padding_step(b, 2)
                hidden = self.graphed("target", self.backbone, verify, True)
                self.graphed("mtp", self.mtp_backbone, (hidden, *verify), True)
            # Greedy rows: a step alone, after a plain step (its tokens), after an MTP step (tokens, accepted).
            for prev in [(), (plain[0],)] + [self.padding_spec_results(b)] * with_mtp:
                self.graphed("decode", self.greedy_decode, plain + prev, True)

    def padding_step(self, num_seqs: int, per_seq: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """ids, positions, slots [num_seqs * per_seq] and block tables [num_seqs, narrowest] of padding rows."""
        n, bs = num_seqs * per_seq, self.block_size
        zeros = torch.zeros(n, dtype=torch.int64, device=self.device)
        tables = torch.full((num_seqs, column_bucket(1)), self.scratch_block, dtype=torch.int64, device=self.device)
        return zeros, zeros, zeros + self.scratch_block * bs, tables

    def padding_spec_results(self, num_seqs: int) -> tuple[Tensor, Tensor]:
        """An MTP step's tokens [num_seqs, 2] and accepted [num_seqs] as padding rows (all accepted: a step after
        it keeps their positions, as `InFlight.padded` pads)."""
        tokens = torch.zeros(num_seqs, 2, dtype=torch.int64, device=self.device)
        return tokens, torch.ones(num_seqs, dtype=torch.int64, device=self.device)

    @property
    def num_graphs(self) -> int:
        return 0 if self.graphs is None else len(self.graphs)

    def logits(self, hidden: Tensor) -> Tensor:
        if self.cpu_lm_head is not None:
            return self.cpu_lm_head(hidden.contiguous())
        head = self.model.lm_head
        return self.kernels.linear(hidden, head.weight, head.bias)

    def backbone(
        self,
        ids: Tensor,
        pos: Tensor,
        slots: Tensor,
        tables: Tensor,
        pad: Tensor | None = None,
        unpad: Tensor | None = None,
        query_start: Tensor | None = None,
        max_query_len: int = 1,
        q_blocks: tuple[Tensor, Tensor] | None = None,
        kernels: Kernels | None = None,
    ) -> Tensor:
        """`forward` over flat tensors (a graph capture's function; `kernels`: the pieces, default the compiled ones)."""
        meta = self._meta(StepTensors(ids, pos, slots, tables, pad, unpad, False, query_start, max_query_len, q_blocks))
        cos, sin = self.cos[pos][:, None], self.sin_signed[pos][:, None]  # [N, 1, D]
        x, delta = self.model.model.embed_tokens(ids), None  # [N, H]
        for i in range(len(self.layers)):
            x, delta = self._layer_forward(i, x, delta, cos, sin, meta, kernels)
        return self.model.model.norm(x if delta is None else x + delta)

    def ragged_backbone(
        self, ids: Tensor, pos: Tensor, slots: Tensor, tables: Tensor, query_start: Tensor, small: Tensor,
        big: Tensor, kernels: Kernels | None = None,
    ) -> Tensor:  # fmt: skip
        """`backbone` of a padded prefill or mixed step (a ragged graph's function): its launch shape, the
        maps' lengths and the tables' width, all from the shapes (`prepare`)."""
        return self.backbone(ids, pos, slots, tables, None, None, query_start, ids.shape[0], (small, big), kernels)

    def ragged_mtp_backbone(
        self, hidden: Tensor, next_ids: Tensor, pos: Tensor, slots: Tensor, tables: Tensor, query_start: Tensor,
        small: Tensor, big: Tensor, kernels: Kernels | None = None,
    ) -> Tensor:  # fmt: skip
        """`mtp_backbone` of a padded prefill or mixed step."""
        return self.mtp_backbone(
            hidden, next_ids, pos, slots, tables, None, None, query_start, next_ids.shape[0], (small, big), kernels
        )

    def mtp_backbone(
        self,
        hidden: Tensor,
        next_ids: Tensor,
        pos: Tensor,
        slots: Tensor,
        tables: Tensor,
        pad: Tensor | None = None,
        unpad: Tensor | None = None,
        query_start: Tensor | None = None,
        max_query_len: int = 1,
        q_blocks: tuple[Tensor, Tensor] | None = None,
        kernels: Kernels | None = None,
    ) -> Tensor:
        """`mtp_forward` over flat tensors."""
        assert self.mtp_layer is not None
        meta = self._meta(
            StepTensors(next_ids, pos, slots, tables, pad, unpad, False, query_start, max_query_len, q_blocks)
        )
        cos, sin = self.cos[pos][:, None], self.sin_signed[pos][:, None]
        mtp: MTPLayer = self.model.model.mtp_layers[0]  # type: ignore[assignment]
        embeds = self.model.model.embed_tokens(next_ids).masked_fill((pos == 0)[:, None], 0.0)  # as SGLang/vLLM
        z = torch.cat([mtp.hidden_layernorm(hidden), mtp.token_layernorm(embeds)], dim=-1)
        z = (kernels or self.kernels).linear(z, mtp.input_proj.weight, mtp.input_proj.bias)
        z, delta = self._layer_forward(len(self.layers), z, None, cos, sin, meta, kernels)
        return mtp.final_layernorm(z if delta is None else z + delta)

    def _layer_forward(
        self,
        i: int,
        x: Tensor,
        delta: Tensor | None,
        cos: Tensor,
        sin: Tensor,
        meta: AttnMeta | KernelMeta,
        kernels: Kernels | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Layer i over cache layer i (i == num_hidden_layers: the MTP layer): (x, delta) -> (x, delta), the
        residual stream and the output not yet added to it (`layers.layer_forward`; the CPU layers add it).
        `kernels`: the elementwise pieces (default: the compiled ones, for graph captures)."""
        if self.cpu_layers is not None and isinstance(meta, AttnMeta):
            x = x if delta is None else x + delta
            return cpu_layer_forward(self.cpu_layers[i], x, cos, sin, self.k_cache[i], self.v_cache[i], meta), None
        w = self.layers[i] if i < len(self.layers) else self.mtp_layer
        assert w is not None
        return layer_forward(w, kernels or self.kernels, x, delta, cos, sin, self.k_cache[i], self.v_cache[i], meta)

    def _meta(self, step: StepTensors) -> AttnMeta | KernelMeta:
        if self.use_kernels:
            return kernel_meta(step, self.block_size, self.num_sms)
        return attn_meta(step, self.block_size, self.num_q_per_kv, self.dtype)

    # ---- one plain step ------------------------------------------------------------------------

    def run_plain(self, seqs: list[Sequence], is_prefill: bool) -> list[SeqResult]:
        """Feed each sequence's pending tokens and sample one next token per sequence."""
        new_tokens = [s.pending_tokens() for s in seqs] if is_prefill else [[s.last_token] for s in seqs]
        step = self.prepare(seqs, new_tokens)
        hidden = self.forward(step)
        last = last_rows(new_tokens, self.device) if is_prefill else slice(0, len(seqs))  # decode: row i is seq i
        logits = self.logits(hidden[last])  # [B, V]
        rows = sampler.build_rows(seqs, 1, None, self.vocab_size, self.device)
        tokens = sampler.sample(logits, rows)
        extras = token_logprobs(seqs, logits, rows, tokens)
        results = [SeqResult([t], 0, *extra) for t, extra in zip(tokens.tolist(), extras, strict=True)]
        return partial_chunks(seqs, new_tokens, results)

    def launch_decode(self, seqs: list[Sequence], prev: InFlight | None = None) -> InFlight:
        """A plain decode step whose tokens stay on the device until `InFlight.results()`.

        With `prev` (a step not yet read), each sequence feeds prev's token on the device, one position
        past the host's view of it: the host prepares and launches this step while the GPU still runs
        prev, so at batch 1 the GPU does not wait for the host between steps (SGLang's overlap
        scheduler). After an MTP step, the token is the last it emitted, at a position that depends on
        whether it accepted its draft: prepared as if it had, moved back on the device if not. The rows'
        sampling must not depend on the host's tokens (no penalties, grammars, logprobs or min_new_tokens
        left: `EngineCore` checks); after an MTP step they are greedy."""
        n, after_spec = len(seqs), prev is not None and prev.is_spec
        step = self.prepare(seqs, [[s.last_token] for s in seqs], ahead=0 if prev is None else 1 + after_spec)
        if all(s.is_greedy for s in seqs):  # the whole step one graph (where its shape is captured)
            inputs: tuple[Tensor, ...] = (step.input_ids, step.positions, step.slot_mapping, step.block_tables)
            if prev is not None:
                inputs += prev.padded(step.block_tables.shape[0])[:2]
            return InFlight.launched(seqs, self.graphed("decode", self.greedy_decode, inputs, step.use_graph)[:n])
        assert not after_spec, "a sampled row after an MTP step needs the host's tokens"
        if prev is not None:
            step.input_ids[:n].copy_(prev.tokens)
        hidden = self.forward(step)
        rows = sampler.build_rows(seqs, 1, None, self.vocab_size, self.device)
        return InFlight.launched(seqs, sampler.sample(self.logits(hidden[:n]), rows))

    def greedy_decode(
        self,
        ids: Tensor,
        pos: Tensor,
        slots: Tensor,
        tables: Tensor,
        prev_tokens: Tensor | None = None,
        prev_accepted: Tensor | None = None,
        kernels: Kernels | None = None,
    ) -> Tensor:
        """A greedy decode step without host syncs: next tokens [B]. `prev_tokens` [B]: the tokens fed instead
        of `ids`; with `prev_accepted` [B], an MTP step's tokens [B, 2], of which each row feeds its last."""
        if prev_tokens is not None and prev_accepted is not None:
            pos, slots, prev_tokens = after_spec(pos, tables, prev_tokens, prev_accepted, self.block_size)
        hidden = self.backbone(ids if prev_tokens is None else prev_tokens, pos, slots, tables, kernels=kernels)
        return self.logits(hidden).argmax(-1)


def after_spec(
    pos: Tensor, tables: Tensor, tokens: Tensor, accepted: Tensor, block_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """A step after an MTP step not yet read (`tokens` [B, 2], `accepted` [B] 0/1): its positions [B*T] (T per
    sequence), prepared as if that step accepted its draft, moved back one where it did not; their slots; and
    the token each sequence feeds first, the last that step emitted (the bonus token, or the correction).
    Device ops only: graph-capturable."""
    num_seqs = tables.shape[0]
    per_seq = pos.shape[0] // num_seqs
    pos = pos - (1 - accepted)[:, None].expand(num_seqs, per_seq).reshape(-1)
    seq_of = torch.arange(pos.shape[0], device=pos.device) // per_seq
    last = tokens.gather(1, accepted[:, None]).squeeze(1)
    return pos, tables[seq_of, pos // block_size] * block_size + pos % block_size, last


@dataclass(frozen=True, slots=True)
class InFlight:
    """A launched decode step whose results are still on the device, with a copy to the host under way.

    Plain: `tokens` [B]. MTP (`mtp.launch_spec`): `tokens` [B, 2] as `mtp.verify` returns them, `accepted`
    [B] (0/1) and the next `drafts` [B]. `host` holds tokens | accepted | drafts once `done` fires."""

    seqs: list[Sequence]
    tokens: Tensor
    host: Tensor  # pinned (CPU: the device tensors themselves, flattened)
    done: torch.cuda.Event | None
    accepted: Tensor | None = None
    drafts: Tensor | None = None
    drafted: tuple[bool, ...] | None = None  # MTP, per row: a real draft was verified (None: every row)

    @classmethod
    def launched(
        cls,
        seqs: list[Sequence],
        tokens: Tensor,
        accepted: Tensor | None = None,
        drafts: Tensor | None = None,
        flat: Tensor | None = None,
        drafted: tuple[bool, ...] | None = None,
    ) -> InFlight:
        """`flat`: tokens | accepted | drafts already in one tensor (the three are views of it)."""
        if flat is None:
            flat = (
                tokens.reshape(-1)
                if accepted is None or drafts is None
                else torch.cat([tokens.reshape(-1), accepted, drafts])
            )
        if flat.device.type != "cuda":  # nothing runs asynchronously: the results are already here
            return cls(seqs, tokens, flat, None, accepted, drafts, drafted)
        host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
        host.copy_(flat, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return cls(seqs, tokens, host, done, accepted, drafts, drafted)

    @property
    def is_spec(self) -> bool:
        return self.accepted is not None

    def padded(self, num_rows: int) -> tuple[Tensor, ...]:
        """The device results as a next step's graph inputs, padded to its `num_rows` (no copy when none are
        padding): plain, (tokens,); MTP, (tokens, accepted, drafts), padding rows accepting (they stay at
        position 0)."""
        num_pad = num_rows - len(self.seqs)
        if self.accepted is None or self.drafts is None:
            return (F.pad(self.tokens, (0, num_pad)) if num_pad else self.tokens,)
        if not num_pad:
            return self.tokens, self.accepted, self.drafts
        return (
            F.pad(self.tokens, (0, 0, 0, num_pad)),
            F.pad(self.accepted, (0, num_pad), value=1),
            F.pad(self.drafts, (0, num_pad)),
        )

    def rows(self, kept: list[int]) -> InFlight:
        """The device results of the sequences at `kept`: a step ahead's `prev` once others dropped out (only
        its device tensors are meant to be read; `results()` belongs to the whole step)."""
        index = torch.tensor(kept, dtype=torch.int64).to(self.tokens.device, non_blocking=True)
        accepted, drafts = (None if t is None else t.index_select(0, index) for t in (self.accepted, self.drafts))
        drafted = None if self.drafted is None else tuple(self.drafted[i] for i in kept)
        seqs = [self.seqs[i] for i in kept]
        return InFlight(seqs, self.tokens.index_select(0, index), self.host, None, accepted, drafts, drafted)

    def results(self) -> list[SeqResult]:
        """Wait for this step only (a step launched after it keeps running) and read its results."""
        if self.done is not None:
            self.done.synchronize()
        flat, n = self.host.tolist(), len(self.seqs)
        if not self.is_spec:
            return [SeqResult([t]) for t in flat]
        drafted = self.drafted or (True,) * n
        return [
            SeqResult(
                flat[2 * i : 2 * i + 1 + flat[2 * n + i]],
                flat[2 * n + i],
                draft_token=flat[3 * n + i],
                drafted=drafted[i],
            )
            for i in range(n)
        ]


def _detached(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach()


def partial_chunks(seqs: list[Sequence], new_tokens: list[list[int]], results: list[SeqResult]) -> list[SeqResult]:
    """A chunk that stops inside its prompt emits nothing (its sample is discarded): only the fed count."""
    return [
        SeqResult([], num_prefilled=len(toks)) if seq.is_chunk_partial else res
        for seq, toks, res in zip(seqs, new_tokens, results, strict=True)
    ]


def last_rows(new_tokens: list[list[int]], device: torch.device) -> Tensor:
    """Row of each sequence's last new token in the flat [N] layout."""
    ends, total = [], 0
    for toks in new_tokens:
        total += len(toks)
        ends.append(total - 1)
    return torch.tensor(ends, dtype=torch.int64).to(device, non_blocking=True)


def token_logprobs(
    seqs: list[Sequence], logits: Tensor, rows: sampler.SamplingRows, tokens: Tensor, rows_per_seq: int = 1
) -> list[tuple[list[float] | None, list[list[tuple[int, float]]] | None]]:
    """Per sequence: (logprobs, top logprobs) of its `rows_per_seq` rows, or (None, None) if not asked."""
    if not any(s.return_logprob for s in seqs):
        return [(None, None)] * len(seqs)
    num_top = max(s.top_logprobs_num for s in seqs)
    chosen, top_ids, top_values = sampler.logprobs_of(logits, rows, tokens, num_top)
    chosen_l, ids_l, values_l = chosen.tolist(), top_ids.tolist(), top_values.tolist()
    out: list[tuple[list[float] | None, list[list[tuple[int, float]]] | None]] = []
    for i, seq in enumerate(seqs):
        r = range(i * rows_per_seq, (i + 1) * rows_per_seq)
        if not seq.return_logprob:
            out.append((None, None))
            continue
        k = seq.top_logprobs_num
        out.append(([chosen_l[j] for j in r], [list(zip(ids_l[j][:k], values_l[j][:k], strict=True)) for j in r]))
    return out
