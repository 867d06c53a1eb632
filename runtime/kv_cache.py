"""Paged KV cache bookkeeping: which pool block holds which sequence's tokens.

The KV pool itself (a numpy array for ONNX Runtime, device memory for
TensorRT; its layout is vp.runtime.kv_pool's) belongs to the backend; this
module only hands out block ids, so one piece of code drives both. Token slot
`s = block_id * block_size + offset`.

One step of a sequence, as the engine loop runs it:

    alloc = manager.allocate_slots(seq, T)      # may copy-on-write the last block
    for src, dst in alloc.copies: copy block src onto dst in the pool   # before the graph reads it
    table.sync(seq, alloc.first_changed)        # the engine's block_table (BatchBlockTable)
    run graph with table.input([seq], ...), manager.context_lens([seq]) -> new_kv
    commit new_kv into the pool at alloc.slots  # vp.runtime.kv_pool
    manager.commit(seq, ids)                    # the T ids just written

Prefix sharing. VideoPoet is a prefix LM: attention is bidirectional inside the
prefix, so the K/V of every prefix position depends on the whole prefix. A block
is therefore only reusable by a sequence with the identical prefix (same ids,
same length, same `extra_key`, e.g. the digest of the text embeddings that fill
placeholder ids). The hash chain starts from a digest of all of that, and only
full blocks inside the prefix are registered: K/V after the prefix are causal
but hang off one prefix, and no later prefix can equal prefix + generated tokens
with the same K/V (those tokens would then attend bidirectionally).
N samples of one prompt share blocks by `fork` after one prefill, or find them by
hash; their unconditional CFG branches (another prefix) share among themselves.

Eviction. A cached block whose ref_count drops to 0 is free but stays findable
by hash until `allocate` hands it out again (then its hash is dropped), so a
repeated prompt reuses its prefix while the pool has room.

Allocation order: the lowest free id. The blocks in use then stay at the
front of the pool, run after run: the LLM graph reads every slot of the pool it
is given, and the ONNX Runtime backend gives it only the blocks up to the
highest one named (vp.runtime.backends.ort). The price: a freed prefix is
overwritten as soon as its block is the lowest free one, so a prompt repeated
after another one no longer finds it (a repeated prompt's prefill is a few
dozen tokens; a pool that creeps up to its whole size would cost every step).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np


class NoFreeBlocksError(ValueError):
    """The pool has fewer free blocks than a request needs (a sizing problem, not a bug)."""


@dataclass
class KVBlock:
    """One pool block. block_hash is set iff the block is full, committed and the
    one registered under that hash in its BlockPool."""

    block_id: int
    ref_count: int = 0
    block_hash: bytes | None = None


class BlockPool:
    """Block ids 0..num_blocks-1 with reference counts, a free list that hands out the lowest id,
    and a hash -> block map for prefix caching.

    Invariants (checked where kept; a violation is a RuntimeError):
    - a block with ref_count 0 is in the free list, and a block in the free list
      has ref_count 0;
    - `cached[h] is b` iff `b.block_hash == h`; such a block may be free (ref 0),
      and is dropped from the map when `allocate` hands it out again.
    """

    def __init__(self, num_blocks: int):
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.blocks = [KVBlock(i) for i in range(num_blocks)]
        self.free: set[int] = set(range(num_blocks))
        self._heap = list(range(num_blocks))  # free ids, lowest first; an id revived (share) since is skipped
        self.cached: dict[bytes, KVBlock] = {}

    @property
    def num_free(self) -> int:
        return len(self.free)

    def allocate(self) -> KVBlock:
        """The lowest free block, with ref_count 1 and no hash (it will be overwritten)."""
        if not self.free:
            raise NoFreeBlocksError(f"all {len(self.blocks)} KV blocks are in use")
        block = self.blocks[self._pop_free()]
        if block.ref_count != 0:
            raise RuntimeError(f"free block {block.block_id} has ref_count {block.ref_count}")
        if block.block_hash is not None:
            del self.cached[block.block_hash]
            block.block_hash = None
        block.ref_count = 1
        return block

    def share(self, block: KVBlock) -> None:
        """One more reference; a free block can only be revived through its hash."""
        if block.ref_count == 0:
            if block.block_hash is None or block.block_id not in self.free:
                raise RuntimeError(f"block {block.block_id} is unreferenced and not a cached free block")
            self.free.remove(block.block_id)
        block.ref_count += 1

    def release(self, block: KVBlock) -> None:
        """One reference less; at 0 the block is free."""
        if block.ref_count <= 0:
            raise RuntimeError(f"release of block {block.block_id} with ref_count {block.ref_count}")
        block.ref_count -= 1
        if block.ref_count == 0:
            self.free.add(block.block_id)
            heapq.heappush(self._heap, block.block_id)

    def _pop_free(self) -> int:
        while self._heap:
            block_id = heapq.heappop(self._heap)
            if block_id in self.free:  # else revived since it was pushed
                self.free.remove(block_id)
                return block_id
        raise RuntimeError("the free list and its heap disagree")

    def lookup(self, block_hash: bytes) -> KVBlock | None:
        return self.cached.get(block_hash)

    def register(self, block: KVBlock, block_hash: bytes) -> None:
        """Make a full, committed block findable; the first block with a hash keeps it."""
        if block.ref_count == 0 or block.block_hash is not None:
            raise RuntimeError(f"register of block {block.block_id} (ref {block.ref_count}, hash set)")
        if block_hash not in self.cached:
            self.cached[block_hash] = block
            block.block_hash = block_hash


@dataclass
class BlockTable:
    """One sequence: logical block i lives in pool block block_ids[i].

    num_tokens slots are allocated, the first num_computed of them hold K/V
    (num_computed <= num_tokens <= len(block_ids) * block_size). The table is
    append-only, except that copy-on-write replaces its last, partial block.
    A block appears at most once in a table. block_hashes[i] is the hash of
    full prefix block i (see the module docstring).
    """

    prefix: np.ndarray  # [P] int64
    block_hashes: list[bytes]
    block_ids: list[int] = field(default_factory=list)
    num_tokens: int = 0
    num_computed: int = 0


@dataclass(frozen=True)
class SlotAllocation:
    """slots: [T] int64 pool slots of the T new tokens, in order.
    copies: (src_block, dst_block) pairs to copy in the pool before the graph
    runs or anything is written (copy-on-write of a shared partial block).
    first_changed: the first logical block whose pool block is new (appended or
    copied on write); the table's blocks before it are as they were."""

    slots: np.ndarray
    copies: list[tuple[int, int]]
    first_changed: int


@dataclass(frozen=True)
class KVStats:
    allocated_blocks: int  # blocks with ref_count > 0
    used_slots: int  # distinct token slots holding or awaiting K/V
    allocated_slots: int  # allocated_blocks * block_size
    waste: float  # 1 - used_slots / allocated_slots (0 when nothing is allocated)
    shared_blocks: int  # blocks with ref_count > 1
    saved_blocks: int  # table entries - allocated blocks: blocks sharing spared


def prefix_block_hashes(prefix: np.ndarray, extra_key: bytes, block_size: int) -> list[bytes]:
    """Hashes of the full blocks of a prefix: h_i = sha256(h_{i-1} | ids of block i),
    h_{-1} = sha256(extra_key | prefix length | all prefix ids)."""
    parent = hashlib.sha256(extra_key + len(prefix).to_bytes(8, "little") + prefix.tobytes()).digest()
    hashes = []
    for start in range(0, len(prefix) - block_size + 1, block_size):
        parent = hashlib.sha256(parent + prefix[start : start + block_size].tobytes()).digest()
        hashes.append(parent)
    return hashes


class KVCacheManager:
    """Block tables of live sequences over one BlockPool.

    Invariant: every block's ref_count equals the number of table entries that
    point at it. Writes only go into blocks with ref_count 1, so a shared block
    is never written.
    """

    def __init__(self, num_blocks: int, block_size: int):
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.block_size = block_size
        self.pool = BlockPool(num_blocks)
        self.tables: dict[Hashable, BlockTable] = {}

    def add_sequence(self, seq_id: Hashable, prefix_tokens: np.ndarray, extra_key: bytes = b"") -> int:
        """Start a sequence with prefix_tokens: [P] int64, P >= 1. Returns how many
        leading tokens are already cached (whole shared blocks, at most P - 1 so
        that prefill computes at least the last prefix position, whose logits
        give the first generated token). Prefill then allocates the rest."""
        if seq_id in self.tables:
            raise ValueError(f"sequence {seq_id!r} already exists")
        prefix = np.asarray(prefix_tokens)
        if prefix.ndim != 1 or prefix.dtype != np.int64 or len(prefix) < 1:
            raise ValueError(f"prefix_tokens must be [P >= 1] int64, got {prefix.shape} {prefix.dtype}")
        table = BlockTable(prefix.copy(), prefix_block_hashes(prefix, extra_key, self.block_size))
        for block_hash in table.block_hashes[: (len(prefix) - 1) // self.block_size]:
            block = self.pool.lookup(block_hash)
            if block is None:
                break
            self.pool.share(block)
            table.block_ids.append(block.block_id)
        table.num_tokens = table.num_computed = len(table.block_ids) * self.block_size
        self.tables[seq_id] = table
        return table.num_computed

    def allocate_slots(self, seq_id: Hashable, num_new_tokens: int) -> SlotAllocation:
        """Slots for the next num_new_tokens tokens of a sequence, allocating blocks
        as needed. Raises NoFreeBlocksError, changing nothing, when the pool is short."""
        table = self._table(seq_id)
        if num_new_tokens < 0:
            raise ValueError(f"num_new_tokens must be >= 0, got {num_new_tokens}")
        bs, start = self.block_size, table.num_tokens
        end = start + num_new_tokens
        last = self.pool.blocks[table.block_ids[-1]] if table.block_ids else None
        if num_new_tokens == 1 and start % bs and last.ref_count == 1:  # a decode step inside its own block
            table.num_tokens = end
            return SlotAllocation(np.array([last.block_id * bs + start % bs], np.int64), [], len(table.block_ids))
        cow = num_new_tokens > 0 and start % bs != 0 and last.ref_count > 1
        needed = -(-end // bs) - len(table.block_ids) + cow
        if needed > self.pool.num_free:
            raise NoFreeBlocksError(
                f"KV cache pool exhausted: sequence {seq_id!r} needs {needed} more block(s) of "
                f"{bs} tokens, {self.pool.num_free} of {len(self.pool.blocks)} are free; "
                f"build the manager with more blocks or lower num_samples (vp generate --samples)"
            )
        copies = []
        first_changed = len(table.block_ids) - cow
        if cow:
            fresh = self.pool.allocate()
            copies.append((last.block_id, fresh.block_id))
            self.pool.release(last)
            table.block_ids[-1] = fresh.block_id
        while len(table.block_ids) * bs < end:
            table.block_ids.append(self.pool.allocate().block_id)
        written = table.block_ids[start // bs : -(-end // bs)] if num_new_tokens else []
        if any(self.pool.blocks[b].ref_count != 1 for b in written):
            raise RuntimeError(f"sequence {seq_id!r} would write into a shared block")
        positions = np.arange(start, end, dtype=np.int64)
        slots = np.asarray(written, np.int64)[positions // bs - start // bs] * bs + positions % bs
        table.num_tokens = end
        return SlotAllocation(slots, copies, first_changed)

    def commit(self, seq_id: Hashable, token_ids: np.ndarray) -> None:
        """Record that the K/V of the next len(token_ids) allocated slots are written.
        token_ids: [T] int64; inside the prefix they must be the prefix ids. Full
        prefix blocks become findable by hash."""
        table = self._table(seq_id)
        ids = np.asarray(token_ids)
        if ids.ndim != 1 or ids.dtype != np.int64:
            raise ValueError(f"token_ids must be [T] int64, got {ids.shape} {ids.dtype}")
        start, end = table.num_computed, table.num_computed + len(ids)
        if end > table.num_tokens:
            raise ValueError(f"commit of {len(ids)} tokens, but only {table.num_tokens - start} slots are allocated")
        if start < table.prefix.size:
            in_prefix = table.prefix[start:end]
            if not np.array_equal(ids[: len(in_prefix)], in_prefix):
                raise ValueError(f"committed ids differ from the prefix at positions {start}..{start + len(in_prefix) - 1}")
        for i in range(start // self.block_size, min(end // self.block_size, len(table.block_hashes))):
            self.pool.register(self.pool.blocks[table.block_ids[i]], table.block_hashes[i])
        table.num_computed = end

    def context_lens(self, seq_ids: Sequence[Hashable]) -> np.ndarray:
        """[B] int64 tokens whose K/V are in the pool (committed)."""
        return np.array([self._table(s).num_computed for s in seq_ids], np.int64)

    def fork(self, parent_id: Hashable, child_id: Hashable) -> None:
        """A child that shares all of the parent's blocks (N samples after one
        prefill); its first write into a shared partial block copies it."""
        parent = self._table(parent_id)
        if child_id in self.tables:
            raise ValueError(f"sequence {child_id!r} already exists")
        if parent.num_computed != parent.num_tokens:
            raise ValueError(f"fork of {parent_id!r} with {parent.num_tokens - parent.num_computed} uncommitted slots")
        for block_id in parent.block_ids:
            self.pool.share(self.pool.blocks[block_id])
        self.tables[child_id] = BlockTable(
            parent.prefix, parent.block_hashes, list(parent.block_ids), parent.num_tokens, parent.num_computed
        )

    def highest_block(self) -> int:
        """The highest block id that holds a sequence's tokens or a cached prefix, -1 if none does."""
        return max((b.block_id for b in self.pool.blocks if b.ref_count or b.block_hash is not None), default=-1)

    def free(self, seq_id: Hashable) -> None:
        """Drop a sequence; its blocks are free (cached prefix blocks stay findable until reused)."""
        for block_id in self._table(seq_id).block_ids:
            self.pool.release(self.pool.blocks[block_id])
        del self.tables[seq_id]

    def stats(self) -> KVStats:
        bs = self.block_size
        used: dict[int, int] = {}
        for table in self.tables.values():
            for i, block_id in enumerate(table.block_ids):
                used[block_id] = max(used.get(block_id, 0), min(bs, table.num_tokens - i * bs))
        allocated = len(self.pool.blocks) - self.pool.num_free
        entries = sum(len(t.block_ids) for t in self.tables.values())
        return KVStats(
            allocated_blocks=allocated,
            used_slots=sum(used.values()),
            allocated_slots=allocated * bs,
            waste=1.0 - sum(used.values()) / (allocated * bs) if allocated else 0.0,
            shared_blocks=sum(b.ref_count > 1 for b in self.pool.blocks),
            saved_blocks=entries - allocated,
        )

    def _table(self, seq_id: Hashable) -> BlockTable:
        if seq_id not in self.tables:
            raise ValueError(f"unknown sequence {seq_id!r}")
        return self.tables[seq_id]
