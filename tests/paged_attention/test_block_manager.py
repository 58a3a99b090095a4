"""Block manager: property tests against a naive model, plus the behaviours callers rely on."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from workloads.paged_attention.block_manager import BlockManager, OutOfBlocks, UnknownSequence


class BlockManagerMachine(RuleBasedStateMachine):
    """Drive the manager with random prompts, appends, forks and frees; a naive model holds each
    sequence's token list and a simulated physical cache holds what was written where.

    Every write goes through the slots the manager hands out (after applying its CoW copies), so reading
    a sequence back through its block table must give exactly the model's tokens: no sequence ever sees
    another's writes, shared prefixes hold the right tokens, and no block is leaked or double-freed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.block_size = 4
        self.manager = BlockManager(24, self.block_size)
        self.model: dict[int, list[int]] = {}
        self.cache: dict[int, int] = {}  # slot -> token written there
        self.next_id = 0
        self.next_token = 1000

    def _write(self, slot: int, token: int) -> None:
        self.cache[slot] = token

    def _apply_copies(self) -> None:
        for src, dst in self.manager.take_pending_copies():
            for offset in range(self.block_size):
                source = src * self.block_size + offset
                if source in self.cache:
                    self.cache[dst * self.block_size + offset] = self.cache[source]

    @rule(prompt=st.lists(st.integers(0, 2), max_size=14))
    def add_prompt(self, prompt):
        free_before = self.manager.num_free_blocks
        try:
            cached, slots = self.manager.allocate_prompt(self.next_id, prompt)
        except OutOfBlocks:
            assert self.manager.num_free_blocks == free_before and self.next_id not in self.manager.sequences
            return
        assert cached % self.block_size == 0 and len(slots) == len(prompt) - cached
        for slot, token in zip(slots, prompt[cached:]):
            self._write(int(slot), token)
        self.model[self.next_id] = list(prompt)
        self.next_id += 1

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def append_step(self, data):
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.model)), min_size=1, unique=True))
        tables_before = {seq: self.manager.block_table(seq) for seq in self.model}
        try:
            slots = self.manager.append_tokens(seqs)
        except OutOfBlocks:
            assert {seq: self.manager.block_table(seq) for seq in self.model} == tables_before
            return
        self._apply_copies()
        for seq, slot in zip(seqs, slots):
            token = self.next_token
            self.next_token += 1
            self._write(int(slot), token)
            self.model[seq].append(token)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def fork(self, data):
        parent = data.draw(st.sampled_from(sorted(self.model)))
        self.manager.fork(parent, self.next_id)
        self.model[self.next_id] = list(self.model[parent])
        self.next_id += 1

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def free(self, data):
        seq = data.draw(st.sampled_from(sorted(self.model)))
        self.manager.free(seq)
        del self.model[seq]

    @invariant()
    def contents_match_model(self):
        for seq, tokens in self.model.items():
            assert self.manager.num_tokens(seq) == len(tokens)
            read_back = [self.cache.get(self.manager.slot(seq, i)) for i in range(len(tokens))]
            assert read_back == tokens, f"sequence {seq} reads {read_back}, expected {tokens}"

    @invariant()
    def bookkeeping_exact(self):
        self.manager.check_invariants()
        used = {block for seq in self.model for block in self.manager.block_table(seq)}
        assert self.manager.num_free_blocks == self.manager.pool.num_blocks - len(used)


TestBlockManagerProperties = BlockManagerMachine.TestCase
TestBlockManagerProperties.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                               suppress_health_check=[HealthCheck.too_slow])


def test_out_of_blocks_error_is_clear_and_changes_nothing():
    manager = BlockManager(2, 4)
    manager.add_sequence("a", 8)
    with pytest.raises(OutOfBlocks, match="preempt"):
        manager.append("a")
    assert manager.num_tokens("a") == 8 and manager.num_free_blocks == 0
    manager.check_invariants()


def test_fork_then_write_copies_only_the_shared_last_block():
    manager = BlockManager(8, 4)
    manager.add_sequence("parent", 6)  # blocks: [full, half]
    manager.fork("parent", "child")
    full, half = manager.block_table("parent")
    manager.append("child")
    assert manager.block_table("child")[0] == full  # full block still shared
    assert manager.block_table("child")[1] != half  # half block copied on write
    np.testing.assert_array_equal(manager.take_pending_copies(), [[half, manager.block_table("child")[1]]])
    assert manager.pool.ref_counts[full] == 2 and manager.pool.ref_counts[half] == 1


def test_prefix_sharing_reuses_full_blocks_only_while_alive():
    manager = BlockManager(16, 4)
    prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    cached, slots = manager.allocate_prompt("a", prompt)
    assert cached == 0 and len(slots) == 9
    cached, slots = manager.allocate_prompt("b", prompt[:8] + [42])
    assert cached == 8 and len(slots) == 1
    assert manager.block_table("a")[:2] == manager.block_table("b")[:2]
    manager.free("a")
    manager.free("b")
    cached, _ = manager.allocate_prompt("c", prompt)
    assert cached == 0  # freed blocks are no longer a cached prefix
    manager.check_invariants()


def test_arrays_for_kernels():
    manager = BlockManager(16, 4, shuffle_seed=3)
    manager.add_sequence(0, 5)
    manager.add_sequence(1, 1)
    tables = manager.block_tables_array([0, 1])
    assert tables.dtype == np.int32 and tables.shape == (2, 2) and tables[1, 1] == 0
    np.testing.assert_array_equal(manager.seq_lens_array([0, 1]), [5, 1])
    slots = manager.append_tokens([0, 1])
    assert slots.dtype == np.int64
    assert slots[0] == manager.block_table(0)[1] * 4 + 1 and slots[1] == manager.block_table(1)[0] * 4 + 1


def test_unknown_sequence_and_double_free_are_errors():
    manager = BlockManager(4, 4)
    with pytest.raises(UnknownSequence):
        manager.append("missing")
    manager.add_sequence("a", 1)
    manager.free("a")
    with pytest.raises(UnknownSequence):
        manager.free("a")
    with pytest.raises(ValueError, match="double free"):
        manager.pool.decref(0)


def test_admission_queries_count_blocks_and_keep_the_watermark_back():
    manager = BlockManager(10, 4)
    assert manager.blocks_needed(0) == 0 and manager.blocks_needed(1) == 1 and manager.blocks_needed(8) == 2
    assert manager.blocks_needed(9) == 3
    manager.add_sequence("a", 13)  # 4 blocks
    assert manager.num_blocks("a") == 4 and manager.num_used_blocks == 4 and manager.num_free_blocks == 6
    assert manager.can_allocate(24) and not manager.can_allocate(25)  # 6 blocks free
    assert manager.can_allocate(16, watermark_blocks=2) and not manager.can_allocate(17, watermark_blocks=2)
    manager.append("a")
    manager.append("a")
    manager.append("a")  # 16 tokens: still 4 blocks
    assert manager.num_blocks("a") == 4
    manager.append("a")
    assert manager.num_blocks("a") == 5 and manager.num_used_blocks == 5
    with pytest.raises(UnknownSequence):
        manager.num_blocks("missing")
