"""The KV-cache block manager: physical blocks, per-sequence block tables, copy-on-write and prefix sharing.

The technique is vLLM's PagedAttention: a sequence's keys and values live in fixed-size physical blocks,
its block table maps logical block i to a physical block, and sequences share blocks copy-on-write. This
module is pure Python bookkeeping; the kernels only ever see the arrays it produces (block tables, sequence
lengths, slot mappings, copy lists).

Costs: allocate, release, append and CoW are O(1) amortized; fork and free cost O(1) per block of the
table they touch (a reference count per block must change); allocate_prompt is O(tokens) for hashing the
prompt's blocks. Running out of blocks raises OutOfBlocks before any state changes, so callers can preempt
a sequence and retry.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np


class OutOfBlocks(RuntimeError):
    """No free physical block is left; the caller should preempt (free or swap out) a sequence and retry."""


class UnknownSequence(KeyError):
    """A sequence id the manager does not hold."""


class BlockPool:
    """A fixed set of physical blocks 0..num_blocks-1 with reference counts and a free stack."""

    def __init__(self, num_blocks: int, *, shuffle_seed: int | None = None) -> None:
        if num_blocks <= 0:
            raise ValueError(f"num_blocks must be positive, got {num_blocks}")
        self.num_blocks = num_blocks
        self.ref_counts = [0] * num_blocks
        # Popped from the end: block 0 first unless shuffled (a shuffled pool scatters sequences the way a
        # long-running server's fragmented pool does, which is what a benchmark should read).
        self._free = list(range(num_blocks - 1, -1, -1))
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(self._free)

    @property
    def num_free(self) -> int:
        return len(self._free)

    def free_blocks(self) -> list[int]:
        """The free blocks, in the order they will be handed out last-first (a copy)."""
        return list(self._free)

    def allocate(self) -> int:
        if not self._free:
            raise OutOfBlocks(f"no free KV-cache block: all {self.num_blocks} blocks are in use; "
                              "preempt or free a sequence, or build the manager with more blocks")
        block = self._free.pop()
        self.ref_counts[block] = 1
        return block

    def incref(self, block: int) -> None:
        if self.ref_counts[block] <= 0:
            raise ValueError(f"block {block} is free; cannot share it")
        self.ref_counts[block] += 1

    def decref(self, block: int) -> bool:
        """Drop one reference; return True when that freed the block."""
        count = self.ref_counts[block]
        if count <= 0:
            raise ValueError(f"block {block} is already free (double free)")
        self.ref_counts[block] = count - 1
        if count == 1:
            self._free.append(block)
            return True
        return False


@dataclass
class SequenceState:
    """One sequence: its block table (logical -> physical) and how many tokens it holds."""

    block_table: list[int] = field(default_factory=list)
    num_tokens: int = 0


class BlockManager:
    """Block tables for many sequences over one BlockPool.

    Writes happen only at a sequence's end (`append`, `allocate_prompt`); a write into a block that another
    sequence also references first copies it (copy-on-write): the manager allocates a fresh block, records
    (src, dst) in `pending_copies` for the copy_blocks kernel, and points the writer at the copy.
    Full prompt blocks are registered by their token prefix, so a later prompt with the same prefix shares
    them (prefix sharing) instead of allocating and recomputing.
    """

    def __init__(self, num_blocks: int, block_size: int, *, shuffle_seed: int | None = None) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.block_size = block_size
        self.pool = BlockPool(num_blocks, shuffle_seed=shuffle_seed)
        self.sequences: dict[Hashable, SequenceState] = {}
        self.pending_copies: list[tuple[int, int]] = []
        self._prefix_blocks: dict[tuple, int] = {}   # prefix key -> physical block
        self._block_prefix: dict[int, tuple] = {}    # physical block -> its prefix key

    # -- queries -------------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free

    def _state(self, seq_id: Hashable) -> SequenceState:
        try:
            return self.sequences[seq_id]
        except KeyError:
            raise UnknownSequence(f"sequence {seq_id!r} is not held by this block manager") from None

    @property
    def num_used_blocks(self) -> int:
        return self.pool.num_blocks - self.pool.num_free

    def blocks_needed(self, num_tokens: int) -> int:
        """Blocks that `num_tokens` new (unshared) tokens occupy."""
        return -(-num_tokens // self.block_size)

    def can_allocate(self, num_tokens: int, watermark_blocks: int = 0) -> bool:
        """Whether a new sequence of `num_tokens` fits and still leaves `watermark_blocks` free.

        The watermark is vLLM's admission rule: keep a few blocks back for running sequences to grow into,
        so that admitting a prompt does not force a preemption on the very next decode step.
        """
        return self.pool.num_free - self.blocks_needed(num_tokens) >= watermark_blocks

    def num_blocks(self, seq_id: Hashable) -> int:
        """The length of a sequence's block table (without copying it)."""
        return len(self._state(seq_id).block_table)

    def block_table(self, seq_id: Hashable) -> list[int]:
        return list(self._state(seq_id).block_table)

    def num_tokens(self, seq_id: Hashable) -> int:
        return self._state(seq_id).num_tokens

    def slot(self, seq_id: Hashable, position: int) -> int:
        """The cache slot (physical block * block_size + offset) holding token `position` of a sequence."""
        state = self._state(seq_id)
        if not 0 <= position < state.num_tokens:
            raise IndexError(f"position {position} outside sequence {seq_id!r} of {state.num_tokens} tokens")
        return state.block_table[position // self.block_size] * self.block_size + position % self.block_size

    def _blocks_needed_to_append(self, state: SequenceState) -> int:
        if state.num_tokens % self.block_size == 0:
            return 1
        return 1 if self.pool.ref_counts[state.block_table[-1]] > 1 else 0

    # -- lifecycle -----------------------------------------------------------------------------------
    def add_sequence(self, seq_id: Hashable, num_tokens: int = 0) -> np.ndarray:
        """Start a sequence holding `num_tokens` new (unshared) tokens; return their slot mapping."""
        if seq_id in self.sequences:
            raise ValueError(f"sequence {seq_id!r} already exists")
        needed = self.blocks_needed(num_tokens)
        if needed > self.pool.num_free:
            raise OutOfBlocks(f"sequence {seq_id!r} needs {needed} blocks for {num_tokens} tokens, "
                              f"{self.pool.num_free} free; preempt or free a sequence")
        state = SequenceState([self.pool.allocate() for _ in range(needed)], num_tokens)
        self.sequences[seq_id] = state
        return self._slots(state, 0, num_tokens)

    def allocate_prompt(self, seq_id: Hashable, token_ids: Sequence[int]) -> tuple[int, np.ndarray]:
        """Start a sequence from a prompt, sharing full blocks whose whole prefix is already cached.

        Returns (cached_tokens, slot_mapping): the first `cached_tokens` tokens are already in the cache
        (shared blocks); slot_mapping says where to write the K/V of the remaining tokens, in order.
        """
        if seq_id in self.sequences:
            raise ValueError(f"sequence {seq_id!r} already exists")
        bs = self.block_size
        keys: list[tuple] = []
        parent: tuple = ()
        for start in range(0, len(token_ids) - bs + 1, bs):
            parent = (parent, tuple(token_ids[start:start + bs]))
            keys.append(parent)
        shared: list[int] = []
        for key in keys:
            block = self._prefix_blocks.get(key)
            if block is None:
                break
            shared.append(block)
        total_blocks = -(-len(token_ids) // bs)
        needed = total_blocks - len(shared)
        if needed > self.pool.num_free:
            raise OutOfBlocks(f"prompt of {len(token_ids)} tokens for sequence {seq_id!r} needs {needed} new "
                              f"blocks, {self.pool.num_free} free; preempt or free a sequence")
        for block in shared:
            self.pool.incref(block)
        table = shared + [self.pool.allocate() for _ in range(needed)]
        for index in range(len(shared), len(keys)):  # register the new full blocks for later prompts
            self._prefix_blocks[keys[index]] = table[index]
            self._block_prefix[table[index]] = keys[index]
        state = SequenceState(table, len(token_ids))
        self.sequences[seq_id] = state
        cached = len(shared) * bs
        return cached, self._slots(state, cached, len(token_ids))

    def fork(self, parent_id: Hashable, child_id: Hashable) -> None:
        """Make `child_id` a copy of `parent_id` that shares every block until one of them writes."""
        if child_id in self.sequences:
            raise ValueError(f"sequence {child_id!r} already exists")
        parent = self._state(parent_id)
        for block in parent.block_table:
            self.pool.incref(block)
        self.sequences[child_id] = SequenceState(list(parent.block_table), parent.num_tokens)

    def free(self, seq_id: Hashable) -> None:
        """Drop a sequence; blocks no other sequence references go back to the pool."""
        state = self.sequences.pop(seq_id, None)
        if state is None:
            raise UnknownSequence(f"sequence {seq_id!r} is not held by this block manager")
        for block in state.block_table:
            if self.pool.decref(block):
                key = self._block_prefix.pop(block, None)
                if key is not None:
                    del self._prefix_blocks[key]

    # -- decode steps --------------------------------------------------------------------------------
    def append(self, seq_id: Hashable) -> int:
        """Reserve the slot for one new token of `seq_id` and return it (CoW-copying a shared last block)."""
        state = self._state(seq_id)
        bs = self.block_size
        offset = state.num_tokens % bs
        if offset == 0:
            state.block_table.append(self.pool.allocate())
        else:
            last = state.block_table[-1]
            if self.pool.ref_counts[last] > 1:
                copy = self.pool.allocate()  # raises before any change when the pool is empty
                self.pool.decref(last)
                self.pending_copies.append((last, copy))
                state.block_table[-1] = copy
        state.num_tokens += 1
        return state.block_table[-1] * bs + offset

    def append_tokens(self, seq_ids: Iterable[Hashable]) -> np.ndarray:
        """One decode step: a slot for one new token in each sequence, all or nothing.

        Raises OutOfBlocks (changing nothing) when the step needs more blocks than are free.
        """
        seq_ids = list(seq_ids)
        if len(set(seq_ids)) != len(seq_ids):
            raise ValueError("append_tokens takes each sequence at most once per step")
        needed = sum(self._blocks_needed_to_append(self._state(seq_id)) for seq_id in seq_ids)
        if needed > self.pool.num_free:
            raise OutOfBlocks(f"this decode step needs {needed} new blocks, {self.pool.num_free} free; "
                              "preempt a sequence and retry")
        return np.array([self.append(seq_id) for seq_id in seq_ids], dtype=np.int64)

    def take_pending_copies(self) -> np.ndarray:
        """The copy-on-write copies to run before this step's writes, as an int64 [n, 2] (src, dst) array."""
        copies = np.array(self.pending_copies, dtype=np.int64).reshape(-1, 2)
        self.pending_copies.clear()
        return copies

    # -- arrays for kernels --------------------------------------------------------------------------
    def _slots(self, state: SequenceState, begin: int, end: int) -> np.ndarray:
        positions = np.arange(begin, end, dtype=np.int64)
        table = np.asarray(state.block_table, dtype=np.int64)
        if positions.size == 0:
            return positions
        return table[positions // self.block_size] * self.block_size + positions % self.block_size

    def block_tables_array(self, seq_ids: Sequence[Hashable], max_blocks: int | None = None,
                           pad: int = 0) -> np.ndarray:
        """Block tables as an int32 [len(seq_ids), max_blocks] array, padded with `pad`."""
        tables = [self._state(seq_id).block_table for seq_id in seq_ids]
        width = max([len(table) for table in tables], default=0) if max_blocks is None else max_blocks
        array = np.full((len(tables), max(width, 1)), pad, dtype=np.int32)
        for row, table in enumerate(tables):
            if len(table) > width:
                raise ValueError(f"sequence {seq_ids[row]!r} has {len(table)} blocks, more than max_blocks={width}")
            array[row, :len(table)] = table
        return array

    def seq_lens_array(self, seq_ids: Sequence[Hashable]) -> np.ndarray:
        return np.array([self._state(seq_id).num_tokens for seq_id in seq_ids], dtype=np.int32)

    def check_invariants(self) -> None:
        """Raise AssertionError when reference counts, the free stack or the prefix map disagree."""
        expected = [0] * self.pool.num_blocks
        for state in self.sequences.values():
            assert len(state.block_table) == -(-state.num_tokens // self.block_size), "table/length mismatch"
            for block in state.block_table:
                expected[block] += 1
        assert expected == self.pool.ref_counts, "reference counts differ from block-table occurrences"
        free = self.pool.free_blocks()
        assert len(free) == len(set(free)), "a block is on the free stack twice"
        assert set(free) == {b for b, count in enumerate(expected) if count == 0}, "free stack != unreferenced"
        for key, block in self._prefix_blocks.items():
            assert self._block_prefix.get(block) == key and expected[block] > 0, "stale prefix entry"
