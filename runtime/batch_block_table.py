"""The block_table engine input of one generation, kept as one array and updated in place.

The KVCacheManager's BlockTable is per sequence, in Python lists; the engine
wants `block_table [B, max_blocks] int64`. Rebuilding that array row by row on
every decode step cost a Python loop over sequences and blocks per step; this
array (as vLLM's worker-side BlockTable) lives for the whole generation, one
row per sequence, and a step only writes the block ids that changed (a new
block every block_size tokens, or the copy-on-write of a shared last block).
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

from vp.runtime.kv_cache import KVCacheManager


class BatchBlockTable:
    """ids: [num_seqs, capacity] int64, row i the pool blocks of seqs[i], padded with 0 (the graph
    masks what lies past a sequence's context). Invariant: for every sequence,
    ids[i, :len(blocks)] equals the manager's block ids, as of the last sync or write."""

    def __init__(self, manager: KVCacheManager, seqs: list[Hashable], capacity: int):
        self.manager = manager
        self.rows = {seq: i for i, seq in enumerate(seqs)}
        self.ids = np.zeros((len(seqs), capacity), np.int64)

    def sync(self, seq: Hashable, first: int = 0) -> None:
        """Copy the sequence's block ids from logical block `first` on (after an allocation whose
        first_changed is `first`, or whole after a sequence is added or forked)."""
        blocks = self.manager.tables[seq].block_ids
        if len(blocks) > self.ids.shape[1]:
            raise RuntimeError(f"sequence {seq!r} holds {len(blocks)} blocks, the table {self.ids.shape[1]}")
        self.ids[self.rows[seq], first:len(blocks)] = blocks[first:]

    def input(self, seqs: list[Hashable], context_lens: np.ndarray) -> np.ndarray:
        """block_table [B, width] for `seqs`: the blocks holding their context (the past the graph
        reads), at least one. A run of consecutive rows is a slice of the array, not a gather."""
        width = max(1, -(-int(context_lens.max()) // self.manager.block_size))
        rows = [self.rows[s] for s in seqs]
        if rows == list(range(rows[0], rows[0] + len(rows))):
            return self.ids[rows[0]:rows[0] + len(rows), :width]
        return self.ids[rows, :width]
