"""The KV pool's memory layout, shared by the LLM graph's contract and every backend.

    kv_pool: [layers, 2, kv_heads, num_blocks, block_size, head_dim]

A "plane" is one (layer, K or V, kv head): it holds that head's keys (or
values) for the blocks of every sequence. Inside a plane a block's
block_size x head_dim values are contiguous, and consecutive blocks follow one
another, so the token slot s = block * block_size + offset is row s of the plane
viewed as [num_blocks * block_size, head_dim].

The graph takes the pool as one input per layer and K/V (k_pool.<layer>,
v_pool.<layer>: [kv_heads, num_blocks, block_size, head_dim], views of this one
array, so no byte moves to feed them; vp.engines.contract.kv_planes) and
attends over every slot of the layer's plane, masking the slots that are not
the sequence's past: a step reads each past K/V byte once, in place
(docs/engine-contract.md; measured in docs/benchmarks.md). The earlier graph
gathered a layer's past blocks into a [B, kv_heads, S, head_dim] copy first:
a write and a second read of every byte. Prefill calls (many new tokens, each
a row against every slot) are given their own past instead: planes of the
blocks that hold it, copied out of the pool (`gather_copies`; the same copy
the earlier graph made, in the rare prefill that has a past), or, with no past
(a first prefill), planes of one empty block (`empty_planes`).

`new_kv`, the graph's output, has the same layout with (batch, tokens) in place
of (num_blocks, block_size): committing a call is, in every plane, one copy per
run of consecutive slots. The numpy backend does it with one assignment; device
backends with one strided 2D copy per run (`slot_copies`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vp.engines.contract import Contract, is_kv_plane, kv_planes


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
    def from_contract(cls, contract: Contract) -> KVPoolLayout:
        """From the LLM contract's plane inputs (k_pool.0 ...: [kv_heads, num_blocks, block_size, head_dim])."""
        names = [s.name for s in contract.inputs if is_kv_plane(s.name)]
        layers = len(names) // 2
        if not layers or tuple(names) != kv_planes(layers):
            raise ValueError(f"the {contract.component} contract's KV pool inputs {names} are not one K and one V "
                             "plane per layer (a bundle of another vp version?); re-export the bundle")
        kv_heads, _, block_size, head_dim = contract.input(names[0]).shape
        return cls(layers, kv_heads, block_size, head_dim)

    @property
    def names(self) -> tuple[str, ...]:
        """The graph's plane inputs, in the pool's order."""
        return kv_planes(self.layers)

    @property
    def planes(self) -> int:
        return self.layers * 2 * self.kv_heads

    @property
    def block_elements(self) -> int:
        """Values of one block across all planes (block_size tokens of every layer's K and V)."""
        return self.planes * self.block_size * self.head_dim

    def shape(self, num_blocks: int) -> tuple[int, ...]:
        return (self.layers, 2, self.kv_heads, num_blocks, self.block_size, self.head_dim)

    def plane_shape(self, num_blocks: int) -> tuple[int, ...]:
        return (self.kv_heads, num_blocks, self.block_size, self.head_dim)

    def plane_views(self, pool: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's plane inputs as views of `pool` (each contiguous: nothing is copied)."""
        return {name: pool[i // 2, i % 2] for i, name in enumerate(self.names)}

    def plane_addresses(self, base: int, num_blocks: int, itemsize: int) -> dict[str, int]:
        """The graph's plane inputs as addresses in a device pool of num_blocks at `base`."""
        plane = self.kv_heads * num_blocks * self.block_size * self.head_dim * itemsize
        return {name: base + i * plane for i, name in enumerate(self.names)}

    def gather_copies(self, blocks: np.ndarray, num_blocks: int, itemsize: int) -> list[Copy2D]:
        """The 2D copies that gather pool blocks `blocks` (of a pool of num_blocks) into a pool of
        len(blocks), block blocks[i] to block i: one per run of consecutive ids, each covering
        every plane."""
        blocks = np.asarray(blocks).reshape(-1)
        block = self.block_size * self.head_dim * itemsize
        breaks = np.flatnonzero(np.diff(blocks) != 1) + 1
        return [Copy2D(dst_offset=int(run[0]) * block, dst_pitch=len(blocks) * block,
                       src_offset=int(blocks[run[0]]) * block, src_pitch=num_blocks * block,
                       width=len(run) * block, height=self.planes)
                for run in np.split(np.arange(len(blocks)), breaks)]

    def empty_planes(self, dtype) -> dict[str, np.ndarray]:
        """Plane inputs of one zero block each, for a call with no past (every context_len 0)."""
        empty = np.zeros(self.plane_shape(1), dtype)
        return dict.fromkeys(self.names, empty)

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
