"""Paged KV cache blocks with a prefix cache: hash-chained full blocks, reference counts, LRU eviction."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from services.worker.engines.torch.sequence import Sequence
from services.worker.kv_events import BlocksRemoved, BlockStored, CacheCleared, KvEventLog


@dataclass(slots=True, eq=False)
class Block:
    block_id: int
    ref_count: int = 0
    hash: int = -1  # -1: not a registered (full, computed) block
    token_ids: tuple[int, ...] = ()
    is_ready: bool = True  # its KV is written by a step already scheduled (a registered prompt block may wait)


def chain_hash(prefix_hash: int, token_ids: tuple[int, ...]) -> int:
    """The hash of a full block given the hash of every block before it (ints hash deterministically)."""
    return hash((prefix_hash, token_ids))


class BlockManager:
    """Owns the block pool. Free blocks keep their cached content until reused, oldest-freed first.

    A full block is registered in the prefix cache when it is allocated for a prompt or when decoding
    fills it. A prompt block is shared only once the step that writes its KV has been scheduled
    (`mark_ready`; within one step every layer writes all new KV before attention reads it), so a
    chunked prompt never lends out a block it has not computed yet.
    """

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))  # LRU: evict from the front
        self.hash_to_block: dict[int, int] = {}
        self.num_prompt_tokens = 0
        self.num_hit_tokens = 0
        self.events: KvEventLog | None = None  # KV events: a hash is stored when it can be hit, removed when not

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    @property
    def num_used_tokens(self) -> int:
        return (self.num_blocks - len(self.free)) * self.block_size

    @property
    def hit_rate(self) -> float:
        return self.num_hit_tokens / self.num_prompt_tokens if self.num_prompt_tokens else 0.0

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def can_allocate(self, seq: Sequence, lookahead: int = 0) -> bool:
        """Room for the whole sequence without counting prefix hits (conservative)."""
        return self.blocks_for(seq.num_tokens + lookahead) <= len(self.free)

    def allocate(self, seq: Sequence) -> None:
        """Give an admitted sequence its blocks, reusing cached prefix blocks; sets num_computed_tokens."""
        assert not seq.block_table, "sequence already holds blocks"
        bs, prefix_hash, is_hit, num_hit = self.block_size, 0, True, 0
        for i in range(self.blocks_for(seq.num_tokens)):
            tokens = tuple(seq.token_ids[i * bs : (i + 1) * bs])
            if len(tokens) < bs:
                is_hit = False
                block = self._take_free()
            else:
                prefix_hash = chain_hash(prefix_hash, tokens)
                cached = self.hash_to_block.get(prefix_hash, -1) if is_hit else -1
                is_hit = cached >= 0 and self.blocks[cached].is_ready and self.blocks[cached].token_ids == tokens
                block = self._share(cached) if is_hit else self._register(self._take_free(), prefix_hash, tokens)
                block.is_ready = is_hit
                seq.block_hashes.append(prefix_hash)
                num_hit += bs if is_hit else 0
            seq.block_table.append(block.block_id)
        # The newest token is always fed (its logits pick the next one), even on a full hit.
        seq.num_computed_tokens = min(num_hit, seq.num_tokens - 1)
        if seq.num_cached_tokens < 0:  # first admission, not a re-admission after preemption
            seq.num_cached_tokens = min(num_hit, seq.num_prompt_tokens)
            self.num_prompt_tokens += seq.num_prompt_tokens
            self.num_hit_tokens += seq.num_cached_tokens

    def mark_ready(self, seq: Sequence, num_tokens: int) -> None:
        """The step being scheduled writes the KV of positions < num_tokens: their full blocks can be shared."""
        for i, block_id in enumerate(seq.block_table[: num_tokens // self.block_size]):
            block = self.blocks[block_id]
            if not block.is_ready:
                block.is_ready = True
                if block.hash != -1 and self.hash_to_block.get(block.hash) == block_id:
                    self._stored(block, seq.block_hashes[i - 1] if i else None)

    def ensure_slots(self, seq: Sequence, num_tokens: int) -> bool:
        """Grow the block table to hold positions < num_tokens; False (nothing taken) if the pool is short."""
        missing = self.blocks_for(num_tokens) - len(seq.block_table)
        if missing > len(self.free):
            return False
        for _ in range(max(0, missing)):
            seq.block_table.append(self._take_free().block_id)
        return True

    def commit_full_blocks(self, seq: Sequence) -> None:
        """Register the blocks decoding has filled with computed KV, so later requests can share them."""
        bs = self.block_size
        for i in range(len(seq.block_hashes), seq.num_computed_tokens // bs):
            tokens = tuple(seq.token_ids[i * bs : (i + 1) * bs])
            prefix_hash = chain_hash(seq.block_hashes[-1] if seq.block_hashes else 0, tokens)
            seq.block_hashes.append(prefix_hash)
            block = self.blocks[seq.block_table[i]]
            if prefix_hash not in self.hash_to_block:  # an identical live block keeps the entry
                self._register(block, prefix_hash, tokens)
                self._stored(block, seq.block_hashes[-2] if i else None)

    def free_seq(self, seq: Sequence) -> None:
        """Drop the sequence's references; tail blocks go back first so prefixes stay cached longest."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[block_id] = None
                if not block.is_ready:  # never computed: its hash must not be hit
                    self._unregister(block)
        seq.block_table, seq.block_hashes = [], []

    def reset_prefix_cache(self) -> None:
        if self.events is not None:
            self.events.record(CacheCleared())
        self.hash_to_block.clear()
        for block in self.blocks:
            block.hash, block.token_ids = -1, ()

    def _take_free(self) -> Block:
        block_id, _ = self.free.popitem(last=False)
        block = self._unregister(self.blocks[block_id])  # evict its cached content
        block.ref_count, block.is_ready = 1, True
        return block

    def _unregister(self, block: Block) -> Block:
        if block.hash != -1 and self.hash_to_block.get(block.hash) == block.block_id:
            del self.hash_to_block[block.hash]
            if block.is_ready and self.events is not None:
                self.events.record(BlocksRemoved((block.hash,)))
        block.hash, block.token_ids = -1, ()
        return block

    def _share(self, block_id: int) -> Block:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free[block_id]
        block.ref_count += 1
        return block

    def publish_events(self) -> None:
        if self.events is not None:
            self.events.flush()

    def _stored(self, block: Block, parent_hash: int | None) -> None:
        if self.events is not None:
            self.events.record(BlockStored(block.hash, parent_hash, block.token_ids))

    def _register(self, block: Block, block_hash: int, token_ids: tuple[int, ...]) -> Block:
        block.hash, block.token_ids, block.is_ready = block_hash, token_ids, True
        self.hash_to_block[block_hash] = block.block_id
        return block
