"""Paged KV cache: slot mapping, fork and copy-on-write, prefix sharing, pool
exhaustion, and the block invariants under random operation sequences."""

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vp.runtime.batch_block_table import BatchBlockTable
from vp.runtime.kv_cache import KVCacheManager, NoFreeBlocksError


def ids(*values):
    return np.array(values, np.int64)


def prefill(manager, seq, prefix, extra_key=b""):
    """add_sequence + allocate + commit of the uncached part of the prefix; the slots."""
    cached = manager.add_sequence(seq, prefix, extra_key)
    alloc = manager.allocate_slots(seq, len(prefix) - cached)
    assert alloc.copies == []
    manager.commit(seq, prefix[cached:])
    return alloc.slots


def blocks(manager, seq):
    """[n] int64: the sequence's pool blocks, in logical order."""
    return np.array(manager.tables[seq].block_ids, np.int64)


def test_slot_mapping_follows_the_block_table():
    m = KVCacheManager(num_blocks=8, block_size=4)
    slots = prefill(m, "a", ids(*range(6)))
    b0, b1 = blocks(m, "a")
    np.testing.assert_array_equal(slots, [b0 * 4, b0 * 4 + 1, b0 * 4 + 2, b0 * 4 + 3, b1 * 4, b1 * 4 + 1])
    np.testing.assert_array_equal(m.context_lens(["a"]), [6])
    step = m.allocate_slots("a", 3)  # fills block 1, opens block 2
    b2 = blocks(m, "a")[2]
    assert step.first_changed == 2
    np.testing.assert_array_equal(step.slots, [b1 * 4 + 2, b1 * 4 + 3, b2 * 4])
    assert len({b0, b1, b2}) == 3
    np.testing.assert_array_equal(m.context_lens(["a"]), [6])  # not committed yet
    m.commit("a", ids(7, 8, 9))
    np.testing.assert_array_equal(m.context_lens(["a"]), [9])


def test_fork_copies_the_shared_partial_block_on_write():
    m = KVCacheManager(num_blocks=8, block_size=4)
    prefill(m, "p", ids(*range(6)))  # one full block and a partial one
    m.fork("p", "c")
    full, partial = blocks(m, "p")
    np.testing.assert_array_equal(blocks(m, "c"), [full, partial])
    assert m.stats().shared_blocks == 2 and m.stats().saved_blocks == 2

    child = m.allocate_slots("c", 1)
    new = blocks(m, "c")[1]
    assert new not in (full, partial)
    assert child.copies == [(partial, new)] and child.first_changed == 1
    assert child.slots[0] == new * 4 + 2  # in the copy, never in the shared block
    assert m.pool.blocks[partial].ref_count == 1

    parent = m.allocate_slots("p", 1)  # the last holder writes in place
    assert parent.copies == [] and parent.slots[0] == partial * 4 + 2


def test_fork_needs_a_committed_parent():
    m = KVCacheManager(num_blocks=4, block_size=4)
    prefill(m, "p", ids(1, 2, 3))
    m.allocate_slots("p", 1)
    with pytest.raises(ValueError, match="uncommitted"):
        m.fork("p", "c")


def test_same_prefix_and_key_share_full_blocks():
    m = KVCacheManager(num_blocks=16, block_size=4)
    prompt = ids(*range(10))  # two full blocks and a partial one
    assert m.add_sequence("a", prompt, b"text-1") == 0
    m.allocate_slots("a", 10)
    assert m.add_sequence("early", prompt, b"text-1") == 0  # nothing committed yet
    m.commit("a", prompt)
    assert m.add_sequence("b", prompt, b"text-1") == 8
    assert m.add_sequence("other-text", prompt, b"text-2") == 0
    assert m.add_sequence("longer", ids(*range(11)), b"text-1") == 0  # prefix LM: whole prefix must match
    np.testing.assert_array_equal(blocks(m, "b"), blocks(m, "a")[:2])
    assert m.stats().shared_blocks == 2
    slots = m.allocate_slots("b", 2).slots  # its own third block
    assert set(slots // 4).isdisjoint(blocks(m, "a"))


def test_at_least_one_prefix_token_is_computed():
    m = KVCacheManager(num_blocks=8, block_size=4)
    prefill(m, "a", ids(*range(8)))
    assert m.add_sequence("b", ids(*range(8))) == 4  # not 8: the last position needs logits


def test_freed_prefix_stays_cached_until_its_block_is_reused():
    m = KVCacheManager(num_blocks=3, block_size=4)
    prompt = ids(*range(5))
    prefill(m, "a", prompt)
    m.free("a")
    assert m.pool.num_free == 3
    assert m.add_sequence("b", prompt) == 4
    m.free("b")
    prefill(m, "x", ids(*range(100, 112)))  # takes all three blocks, the cached one too
    m.free("x")
    assert m.add_sequence("c", prompt) == 0


def test_commit_checks_prefix_ids_and_allocation():
    m = KVCacheManager(num_blocks=4, block_size=4)
    m.add_sequence("a", ids(1, 2, 3))
    m.allocate_slots("a", 3)
    with pytest.raises(ValueError, match="differ from the prefix"):
        m.commit("a", ids(1, 2, 9))
    with pytest.raises(ValueError, match="only 3 slots"):
        m.commit("a", ids(1, 2, 3, 4))
    with pytest.raises(ValueError, match="int64"):
        m.add_sequence("b", np.array([1, 2], np.int32))


def test_free_returns_every_block():
    m = KVCacheManager(num_blocks=8, block_size=4)
    prefill(m, "a", ids(*range(7)))
    for child in "bcd":
        m.fork("a", child)
        m.allocate_slots(child, 2)
    for seq in "abcd":
        m.free(seq)
    assert m.pool.num_free == 8
    assert all(b.ref_count == 0 for b in m.pool.blocks)
    assert m.stats().allocated_blocks == 0


def test_exhaustion_says_what_was_needed_and_changes_nothing():
    m = KVCacheManager(num_blocks=3, block_size=16)
    prefill(m, "a", ids(*range(20)))
    before = blocks(m, "a")
    with pytest.raises(NoFreeBlocksError) as err:
        m.allocate_slots("a", 40)
    message = str(err.value)
    assert "needs 2 more block(s) of 16 tokens" in message
    assert "1 of 3 are free" in message
    assert "--samples" in message and "--kv-blocks" not in message  # an option that exists
    assert isinstance(err.value, ValueError)
    np.testing.assert_array_equal(blocks(m, "a"), before)
    assert m.pool.num_free == 1


def test_stats_count_waste_and_sharing():
    m = KVCacheManager(num_blocks=8, block_size=4)
    prefill(m, "a", ids(*range(6)))
    m.fork("a", "b")
    s = m.stats()
    assert (s.allocated_blocks, s.used_slots, s.allocated_slots) == (2, 6, 8)
    assert s.waste == pytest.approx(0.25)
    assert (s.shared_blocks, s.saved_blocks) == (2, 2)


class KVCacheMachine(RuleBasedStateMachine):
    """Random add / fork / allocate+write+commit / free over a small pool, with a
    simulated pool of K/V values checked against what each sequence should read
    through the engine's block table (a BatchBlockTable kept in sync as the runtime does)."""

    NUM_BLOCKS, BLOCK_SIZE, MAX_SEQS = 12, 4, 48

    def __init__(self):
        super().__init__()
        self.m = KVCacheManager(self.NUM_BLOCKS, self.BLOCK_SIZE)
        self.kv = np.full(self.NUM_BLOCKS * self.BLOCK_SIZE, -1, np.int64)  # one value per slot
        self.tokens = {}  # seq -> (extra_key, prefix, token ids so far)
        self.next_id = 0
        self.table = BatchBlockTable(self.m, list(range(self.MAX_SEQS)), capacity=self.NUM_BLOCKS)

    @staticmethod
    def kv_value(extra_key, prefix, tokens, pos):
        """What position pos holds: inside the prefix it depends on the whole prefix
        (bidirectional), after it on the prefix and every token up to pos."""
        tail = tuple(tokens[len(prefix) : pos + 1])
        return hash((extra_key, tuple(prefix), pos, tail)) & (2**62 - 1)

    @precondition(lambda self: self.next_id < self.MAX_SEQS)
    @rule(prefix=st.lists(st.integers(0, 2), min_size=1, max_size=12), extra_key=st.sampled_from([b"", b"k"]))
    def add(self, prefix, extra_key):
        seq, self.next_id = self.next_id, self.next_id + 1
        cached = self.m.add_sequence(seq, np.array(prefix, np.int64), extra_key)
        self.table.sync(seq)
        assert cached % self.BLOCK_SIZE == 0 and cached < len(prefix)
        self.tokens[seq] = (extra_key, prefix, list(prefix[:cached]))

    @precondition(lambda self: self.tokens and self.next_id < self.MAX_SEQS)
    @rule(data=st.data())
    def fork(self, data):
        parent = data.draw(st.sampled_from(sorted(self.tokens)))
        child, self.next_id = self.next_id, self.next_id + 1
        self.m.fork(parent, child)
        self.table.sync(child)
        extra_key, prefix, tokens = self.tokens[parent]
        self.tokens[child] = (extra_key, prefix, list(tokens))

    @precondition(lambda self: self.tokens)
    @rule(data=st.data(), n=st.integers(0, 6))
    def step(self, data, n):
        seq = data.draw(st.sampled_from(sorted(self.tokens)))
        extra_key, prefix, tokens = self.tokens[seq]
        before = list(self.m.tables[seq].block_ids)
        try:
            alloc = self.m.allocate_slots(seq, n)
        except NoFreeBlocksError:
            assert self.m.tables[seq].block_ids == before
            return
        assert self.m.tables[seq].block_ids[:alloc.first_changed] == before[:alloc.first_changed]
        self.table.sync(seq, alloc.first_changed)
        for src, dst in alloc.copies:
            src_slots, dst_slots = (np.arange(self.BLOCK_SIZE) + b * self.BLOCK_SIZE for b in (src, dst))
            self.kv[dst_slots] = self.kv[src_slots]
        assert len(alloc.slots) == n and len(set(alloc.slots.tolist())) == n
        for slot in alloc.slots:  # writes never go into a shared block
            assert self.m.pool.blocks[slot // self.BLOCK_SIZE].ref_count == 1
        new = prefix[len(tokens) : len(tokens) + n]
        new += data.draw(st.lists(st.integers(0, 2), min_size=n - len(new), max_size=n - len(new)))
        tokens += new
        for i, slot in enumerate(alloc.slots):
            self.kv[slot] = self.kv_value(extra_key, prefix, tokens, len(tokens) - n + i)
        self.m.commit(seq, np.array(new, np.int64))

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def free(self, data):
        seq = data.draw(st.sampled_from(sorted(self.tokens)))
        self.m.free(seq)
        del self.tokens[seq]

    @invariant()
    def ref_counts_match_table_entries(self):
        entries = np.zeros(self.NUM_BLOCKS, int)
        for table in self.m.tables.values():
            assert len(set(table.block_ids)) == len(table.block_ids)  # at most one slot per sequence
            entries[table.block_ids] += 1
        free = list(self.m.pool.free)
        assert len(set(free)) == len(free)
        for block in self.m.pool.blocks:
            assert block.ref_count == entries[block.block_id]
            assert (block.ref_count == 0) == (block.block_id in self.m.pool.free)
        for block_hash, block in self.m.pool.cached.items():
            assert block.block_hash == block_hash

    @invariant()
    def every_sequence_reads_its_own_kv(self):
        for seq, (extra_key, prefix, tokens) in self.tokens.items():
            table = self.m.tables[seq]
            assert table.num_computed == table.num_tokens == len(tokens)
            positions = np.arange(len(tokens))
            engine_table = self.table.input([seq], np.array([max(len(tokens), 1)]))[0]
            slots = engine_table[positions // self.BLOCK_SIZE] * self.BLOCK_SIZE
            slots += positions % self.BLOCK_SIZE
            expected = [self.kv_value(extra_key, prefix, tokens, p) for p in positions]
            np.testing.assert_array_equal(self.kv[slots], expected)

    def teardown(self):
        for seq in list(self.tokens):
            self.m.free(seq)
        assert self.m.pool.num_free == self.NUM_BLOCKS
        assert all(block.ref_count == 0 for block in self.m.pool.blocks)


KVCacheMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_kv_cache_invariants = KVCacheMachine.TestCase


def test_blocks_in_use_stay_at_the_front():
    """The lowest free id is handed out (the ort backend's graph reads the pool up to the highest
    block named), cached or not."""
    m = KVCacheManager(num_blocks=6, block_size=4)
    prompt = ids(*range(9))  # blocks 0 and 1 full (cached), 2 partial
    prefill(m, "a", prompt)
    prefill(m, "x", ids(*range(100, 108)))
    assert blocks(m, "a").tolist() == [0, 1, 2] and blocks(m, "x").tolist() == [3, 4]
    m.free("a")
    assert m.add_sequence("b", prompt) == 8  # found while its blocks are free
    m.free("b")
    prefill(m, "y", ids(*range(200, 212)))
    assert blocks(m, "y").tolist() == [0, 1, 2]
    assert m.add_sequence("c", prompt) == 0  # overwritten
