"""CUDA graphs for fixed-shape forwards (decode, MTP verify, padded prefill/mixed steps): capture once per
shape, then replay.

Decode at batch 1 is bound by kernel launches on the host, not by the GPU (BENCHMARKS.md), so a
replayed graph of the whole forward is what brings it near the HBM roofline.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from torch.cuda import _POOL_HANDLE as _PoolHandle


def batch_bucket(num_seqs: int) -> int:
    """Graphs exist for power-of-two batch sizes; a batch is padded up to the next one."""
    return 1 << max(0, num_seqs - 1).bit_length()


def batch_buckets(max_batch: int) -> Iterator[int]:
    """Every batch bucket up to the one `max_batch` pads to: 1, 2, 4, ..."""
    return (1 << i for i in range(batch_bucket(max_batch).bit_length()))


def token_bucket(num_tokens: int, multiple: int) -> int:
    """Prefill and mixed steps are padded to a multiple of `multiple` tokens (their graphs' shapes)."""
    return -(-num_tokens // multiple) * multiple


def column_bucket(num_blocks: int, minimum: int = 8) -> int:
    """Block-table widths are padded to a power of two (the context gathered per sequence)."""
    return max(minimum, 1 << max(0, num_blocks - 1).bit_length())


@dataclass(slots=True)
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[Tensor, ...]
    output: Tensor


class GraphCache:
    """Replays `fn(*inputs)` from a captured graph keyed by the caller (shapes determine the key).

    `fn` must be a pure function of its tensor inputs and the model's persistent state (weights, KV
    cache) with no host syncs; running it twice on the same inputs must be harmless (warm-up).
    The returned tensor is the graph's own output: read it before the next replay of that key.
    At `max_graphs` the least recently replayed graph makes way: a server that has seen every batch bucket
    at many block-table widths keeps replaying the ones in use instead of falling back to unrolled steps
    for good. Each graph holds its own memory pool, unless `share_pool`: then all of them take their
    intermediates from one (they replay one at a time on one stream; each keeps its own output), as
    vLLM's and SGLang's do; for many large shapes (prefill steps) one pool, not one per shape.
    """

    def __init__(self, max_graphs: int = 256, share_pool: bool = False) -> None:
        self.graphs: OrderedDict[Hashable, _Graph] = OrderedDict()
        self.max_graphs = max_graphs
        self.pool = torch.cuda.graph_pool_handle() if share_pool else None

    def __len__(self) -> int:
        return len(self.graphs)

    def run(self, key: Hashable, fn: Callable[..., Tensor], inputs: tuple[Tensor, ...]) -> Tensor:
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= self.max_graphs:
                torch.cuda.current_stream().synchronize()  # no replay of the one evicted still in flight
                self.graphs.popitem(last=False)
            entry = self.graphs[key] = self._capture(fn, inputs, self.pool)
        else:
            self.graphs.move_to_end(key)
        for static, value in zip(entry.inputs, inputs, strict=True):
            static.copy_(value, non_blocking=True)
        entry.graph.replay()
        return entry.output

    @staticmethod
    def _capture(fn: Callable[..., Tensor], inputs: tuple[Tensor, ...], pool: _PoolHandle | None) -> _Graph:
        static = tuple(x.clone() for x in inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the graph (allocator, lazy kernel init)
            for _ in range(2):
                fn(*static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            output = fn(*static)
        return _Graph(graph, static, output)
