"""The KV pool's memory layout, shared by the LLM graph's contract and every backend.

    kv_pool: [layers, 2, kv_heads, num_blocks, block_size, head_dim]

A "plane" is one (layer, K or V, kv head): it holds that head's keys (or
values) for the blocks of every sequence. Inside a plane a block's
block_size x head_dim values are contiguous, and consecutive blocks follow one
another, so the token slot s = block * block_size + offset is row s of the plane
viewed as [num_blocks * block_size, head_dim].

Why this order (docs/engine-contract.md, measured in docs/benchmarks.md): the
graph gathers one layer's past K (or V) for a whole batch with one Gather of
whole blocks, straight into the [B, kv_heads, S, head_dim] layout its attention
multiplies with, so a step copies each past K/V byte once (the gather) before
the attention reads it. The earlier layout, one token slot of all layers
contiguous, made the graph gather every layer at once and then slice and
transpose per layer; on the small preset its decode call grew by 20.2 ms from
context 64 to 1,700, this graph's by 8.6 ms (benchmarks/graph_step.py). Rows of
one head_dim each (the earlier layout read per head) cost ORT's Gather ~1 us a
row, which is why whole blocks are the unit.

`new_kv`, the graph's output, has the same layout with (batch, tokens) in place
of (num_blocks, block_size): committing a call is, in every plane, one copy per
run of consecutive slots. The numpy backend does it with one assignment; device
backends with one strided 2D copy per run (`slot_copies`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Copy2D:
    """A strided copy in bytes, as cudaMemcpy2D takes it: `height` rows of `width` bytes, row i from
    src + src_offset + i * src_pitch to dst + dst_offset + i * dst_pitch."""

    dst_offset: int
    dst_pitch: int
    src_offset: int
    src_pitch: int
    width: int
    height: int


@dataclass(frozen=True)
class KVPoolLayout:
    """The pool [layers, 2, kv_heads, num_blocks, block_size, head_dim] and new_kv
    [layers, 2, kv_heads, batch, tokens, head_dim] of one LLM contract."""

    layers: int
    kv_heads: int
    block_size: int
    head_dim: int

    @classmethod
    def from_shape(cls, shape: tuple) -> KVPoolLayout:
        """From the contract's kv_pool shape (its num_blocks axis a name or a size)."""
        layers, two, kv_heads, _, block_size, head_dim = shape
        if two != 2:
            raise ValueError(f"kv_pool {shape}: expected [layers, 2, kv_heads, num_blocks, block_size, head_dim]")
        return cls(layers, kv_heads, block_size, head_dim)

    @property
    def planes(self) -> int:
        return self.layers * 2 * self.kv_heads

    @property
    def block_elements(self) -> int:
        """Values of one block across all planes (block_size tokens of every layer's K and V)."""
        return self.planes * self.block_size * self.head_dim

    def shape(self, num_blocks: int) -> tuple[int, ...]:
        return (self.layers, 2, self.kv_heads, num_blocks, self.block_size, self.head_dim)

    def commit(self, pool: np.ndarray, new_kv: np.ndarray, slots: np.ndarray) -> None:
        """pool [.., num_blocks, block_size, hd] <- new_kv [.., B, T, hd] at slots [B, T] int64."""
        rows = pool.reshape(self.planes, -1, self.head_dim)  # a view: (planes, num_blocks * block_size, hd)
        rows[:, slots.reshape(-1)] = new_kv.reshape(self.planes, -1, self.head_dim)

    def copy_block(self, pool: np.ndarray, src: int, dst: int) -> None:
        pool[:, :, :, dst] = pool[:, :, :, src]

    def slot_copies(self, slots: np.ndarray, num_blocks: int, itemsize: int) -> list[Copy2D]:
        """The 2D copies that commit new_kv (a call's slots [B, T], in order) into a pool of num_blocks:
        one per run of consecutive slots, each covering every plane."""
        slots = np.asarray(slots).reshape(-1)
        row = self.head_dim * itemsize
        breaks = np.flatnonzero(np.diff(slots) != 1) + 1
        return [Copy2D(dst_offset=int(slots[run[0]]) * row, dst_pitch=num_blocks * self.block_size * row,
                       src_offset=int(run[0]) * row, src_pitch=len(slots) * row,
                       width=len(run) * row, height=self.planes)
                for run in np.split(np.arange(len(slots)), breaks)]

    def block_copy(self, src: int, dst: int, num_blocks: int, itemsize: int) -> Copy2D:
        """The 2D copy of block src onto block dst in every plane (copy-on-write)."""
        block = self.block_size * self.head_dim * itemsize
        return Copy2D(dst_offset=dst * block, dst_pitch=num_blocks * block, src_offset=src * block,
                      src_pitch=num_blocks * block, width=block, height=self.planes)
