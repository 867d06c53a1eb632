"""The engine's block_table input, kept in place across steps (random operation sequences are in
test_kv_cache.py's state machine)."""

import numpy as np
import pytest

from vp.runtime.batch_block_table import BatchBlockTable
from vp.runtime.kv_cache import KVCacheManager


def grown(manager, table, seq, n):
    """Allocate and commit n tokens of `seq` (token id = position, as the prefixes here are),
    syncing the table as the runtime does."""
    start = manager.tables[seq].num_computed
    allocation = manager.allocate_slots(seq, n)
    table.sync(seq, allocation.first_changed)
    manager.commit(seq, np.arange(start, start + n, dtype=np.int64))
    return allocation


def test_rows_follow_the_manager_and_the_width_covers_the_context():
    m = KVCacheManager(num_blocks=16, block_size=4)
    seqs = ["a", "b", "c"]
    table = BatchBlockTable(m, seqs, capacity=5)
    m.add_sequence("a", np.arange(6, dtype=np.int64))
    table.sync("a")
    grown(m, table, "a", 6)  # the prefix: blocks 0 and 1
    for child in ("b", "c"):
        m.fork("a", child)
        table.sync(child)
    grown(m, table, "b", 3)  # copy-on-write of the shared partial block, then a new block
    for seq in seqs:
        np.testing.assert_array_equal(table.ids[seqs.index(seq), :len(m.tables[seq].block_ids)],
                                      m.tables[seq].block_ids)
    context = m.context_lens(seqs)  # 6, 9, 6 tokens: 2, 3, 2 blocks hold them
    engine = table.input(seqs, context)
    assert engine.shape == (3, 3) and engine.dtype == np.int64
    np.testing.assert_array_equal(engine[0, 2:], 0)  # padding: the graph masks past the context
    assert np.shares_memory(engine, table.ids)  # consecutive rows: a slice, built by nobody
    assert engine[1, 1] != engine[0, 1]  # b wrote into its own copy of the partial block
    np.testing.assert_array_equal(table.input(["c", "a"], context[[2, 0]]), engine[[2, 0], :2])


def test_an_empty_context_still_gives_one_block_and_overflow_is_a_bug():
    m = KVCacheManager(num_blocks=8, block_size=4)
    table = BatchBlockTable(m, ["a"], capacity=1)
    m.add_sequence("a", np.arange(3, dtype=np.int64))
    allocation = m.allocate_slots("a", 3)
    table.sync("a", allocation.first_changed)
    assert table.input(["a"], np.array([0])).shape == (1, 1)
    m.commit("a", np.arange(3, dtype=np.int64))
    allocation = m.allocate_slots("a", 4)
    with pytest.raises(RuntimeError, match="holds 2 blocks, the table 1"):
        table.sync("a", allocation.first_changed)
